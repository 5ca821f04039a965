"""Readiness: the store is writable, Slack accepts the bot token, the DAM accepts its token.

Results are cached for a few seconds so a probe every second costs the DAM and Slack nothing much.
"""

from __future__ import annotations

import asyncio
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.inbox import Inbox
from widen.client import Unauthorized, WidenClient, WidenError


class Readiness:
    def __init__(self, inbox: Inbox, slack: AsyncWebClient, widen: WidenClient, *, cache_seconds: float) -> None:
        self.inbox = inbox
        self.slack = slack
        self.widen = widen
        self.cache_seconds = cache_seconds
        self._checked_at = float("-inf")
        self._problems: list[str] = []
        self._lock = asyncio.Lock()

    async def problems(self) -> list[str]:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.cache_seconds:
                self._problems = await self._check()
                self._checked_at = time.monotonic()
            return list(self._problems)

    async def _check(self) -> list[str]:
        store, slack, dam = await asyncio.gather(self._store(), self._slack(), self._dam())
        return [p for p in (store, slack, dam) if p]

    async def _store(self) -> str | None:
        return None if await self.inbox.writable() else "store: the database is not writable"

    async def _slack(self) -> str | None:
        try:
            await asyncio.wait_for(self.slack.auth_test(), 5)
        except SlackApiError as exc:
            error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else None
            return f"slack: auth.test failed ({error or exc.response.status_code}): check SLACK_BOT_TOKEN"
        except Exception as exc:  # network errors of every kind: not ready, say why
            return f"slack: unreachable ({type(exc).__name__})"
        return None

    async def _dam(self) -> str | None:
        try:
            await asyncio.wait_for(self.widen.check(), 10)
        except Unauthorized:
            return "dam: the DAM refused WIDEN_API_TOKEN"
        except WidenError as exc:
            return f"dam: {exc}"
        except TimeoutError:
            return "dam: no answer within 10 s"
        return None
