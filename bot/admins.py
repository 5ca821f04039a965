"""Who may manage the DAM's webhooks from Slack.

ADMIN_USER_IDS, when set, is the whole list. When it is empty, the workspace's admins and owners may
(`users.info`). Answers are cached for a few minutes, and a `users.info` that does not answer within
`timeout` counts as "could not check": the check runs before Slack is acknowledged, so it must stay
well inside Slack's three seconds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class Decision(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    UNKNOWN = "unknown"  # Slack could not tell us in time


class Admins:
    def __init__(
        self,
        client: AsyncWebClient,
        admin_user_ids: list[str],
        *,
        cache_seconds: float = 300.0,
        timeout: float = 2.0,
    ) -> None:
        self.client = client
        self.admin_user_ids = frozenset(admin_user_ids)
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._cache: dict[str, tuple[bool, float]] = {}  # user id -> (is admin, checked at)

    async def check(self, user_id: str | None) -> Decision:
        if not user_id:
            return Decision.REFUSED
        if self.admin_user_ids:
            return Decision.ALLOWED if user_id in self.admin_user_ids else Decision.REFUSED
        cached = self._cache.get(user_id)
        if cached is not None and time.monotonic() - cached[1] < self.cache_seconds:
            return Decision.ALLOWED if cached[0] else Decision.REFUSED
        try:
            response = await asyncio.wait_for(self.client.users_info(user=user_id), self.timeout)
        except SlackApiError as exc:
            error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else None
            if error == "user_not_found":
                return Decision.REFUSED
            log.warning("users.info failed (%s): cannot tell whether %s is a workspace admin", error, user_id)
            return Decision.UNKNOWN
        except Exception as exc:  # timeouts and network errors: say so, never guess "yes"
            log.warning("users.info failed (%s): cannot tell whether %s is a workspace admin",
                        type(exc).__name__, user_id)
            return Decision.UNKNOWN
        user = response.get("user") or {}
        is_admin = bool(
            not user.get("deleted")
            and not user.get("is_bot")
            and (user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))
        )
        self._cache[user_id] = (is_admin, time.monotonic())
        return Decision.ALLOWED if is_admin else Decision.REFUSED
