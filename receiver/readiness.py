"""Readiness: the store is writable, Slack accepts the bot token, the DAM accepts its token.

Results are cached for READY_CACHE_SECONDS so a probe every second costs the DAM and Slack nothing much;
concurrent probes share one check. Each check has its own short deadline, so a probe answers well within
the few seconds an orchestrator gives it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.inbox import Inbox
from widen.client import Unauthorized, WidenClient, WidenError

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 5.0  # seconds per check

# Slack's answers that mean the token itself is the problem.
TOKEN_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}


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
        """What keeps the bot from working, one line each, from cache when fresh; empty when ready."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.cache_seconds:
                problems = await self._check()
                if problems != self._problems:
                    # Log changes only: a probe every few seconds must not flood the log.
                    if problems:
                        log.warning("not ready: %s", "; ".join(problems))
                    elif self._checked_at != float("-inf"):
                        log.info("ready again")
                self._problems = problems
                self._checked_at = time.monotonic()
            return list(self._problems)

    async def _check(self) -> list[str]:
        results = await asyncio.gather(self._store(), self._slack(), self._dam())
        return [p for p in results if p]

    async def _store(self) -> str | None:
        try:
            ok = await asyncio.wait_for(self.inbox.writable(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"store: no write within {CHECK_TIMEOUT:g} s (DATABASE_URL)"
        except Exception as exc:  # a closed or broken store: not ready, say why
            return f"store: {type(exc).__name__} (DATABASE_URL)"
        return None if ok else "store: the database is not writable (DATABASE_URL)"

    async def _slack(self) -> str | None:
        try:
            await asyncio.wait_for(self.slack.auth_test(), CHECK_TIMEOUT)
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or f"HTTP {exc.response.status_code}")
            if error in TOKEN_ERRORS:
                return f"slack: auth.test answered {error}: check SLACK_BOT_TOKEN"
            return f"slack: auth.test answered {error} (SLACK_API_URL)"
        except TimeoutError:
            return f"slack: no answer within {CHECK_TIMEOUT:g} s (SLACK_API_URL)"
        except Exception as exc:  # network errors of every kind: not ready, say why
            return f"slack: unreachable ({type(exc).__name__}; SLACK_API_URL)"
        return None

    async def _dam(self) -> str | None:
        try:
            await asyncio.wait_for(self.widen.check(), CHECK_TIMEOUT)
        except Unauthorized:
            return "dam: the DAM refused WIDEN_API_TOKEN"
        except WidenError as exc:  # its message names the call and the status, never the token
            return f"dam: {exc} (WIDEN_API_URL)"
        except TimeoutError:
            return f"dam: no answer within {CHECK_TIMEOUT:g} s (WIDEN_API_URL)"
        except Exception as exc:
            return f"dam: unreachable ({type(exc).__name__}; WIDEN_API_URL)"
        return None
