"""WidenClient: the DAM's API v2 (assets, webhook configurations) over one aiohttp.ClientSession.

aiohttp rather than httpx: a third to a sixth of the CPU per call (sequential to concurrent), which counts
when a delivery flood makes the worker fetch dozens of assets a second. The session opens on the first call
(inside the running loop, as aiohttp wants) and `aclose()` closes it; each answer is read whole before it is
looked at, so its connection goes back to the pool at once.

Every request passes the shared rate limiter, then is retried (tenacity) on network errors, timeouts,
5xx and 429; never on other 4xx. A 429's `X-Ratelimit-Reset` (ISO-8601) or `Retry-After` (seconds) says
how long to wait, capped at `max_wait`. Failures surface as the typed exceptions below, whose messages
never carry the token.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, quote_plus, urlencode
from urllib.request import getproxies, proxy_bypass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from pydantic import BaseModel, SecretStr, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter
from yarl import URL

from widen.limiter import RateLimiter
from widen.models import Asset, CreatedWebhook, WebhookConfiguration

ASSET_EXPAND = "asset_properties,embeds,file_properties,metadata,security,status,thumbnails"
MAX_PAGE = 10  # the API refuses a larger `limit` for webhook configurations
MAX_ANSWER = 8 * 1024 * 1024  # bytes of an answer's body, decoded
_RATE_WINDOW = 1.0  # seconds; the fallback wait for a 429 without a hint
# Seconds, for a 429 whose reset time is already past: not nothing (every retry would be spent at once),
# not a whole window either (a reset a few ms past only means the answer took that long to arrive).
_PAST_RESET_WAIT = 0.1

M = TypeVar("M", bound=BaseModel)

_log = logging.getLogger(__name__)  # one DEBUG line per request, as httpx wrote before


class WidenError(Exception):
    """Any failure talking to the DAM. `status` is the HTTP status, None when no answer came."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(WidenError):
    """404: no such asset or configuration."""


class Unauthorized(WidenError):
    """401/403: the token is missing, wrong, revoked, or lacks the permission."""


class BadRequest(WidenError):
    """Another 4xx: the DAM refused what we sent; the message carries its reason."""


class Unavailable(WidenError):
    """5xx, network error or timeout, still failing after the retries. `sent` is False when no connection
    was made, so the DAM surely did nothing."""

    def __init__(self, message: str, *, status: int | None = None, sent: bool = True) -> None:
        super().__init__(message, status=status)
        self.sent = sent


class RateLimited(WidenError):
    """429 still answered after the retries; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def may_have_acted(exc: BaseException) -> bool:
    """After a call that changes something failed: False only when the DAM surely did nothing (it
    refused with a 3xx or 4xx, or was never reached). An answer we could not read, a 5xx, a timeout,
    or our own cancellation leave it open."""
    if isinstance(exc, Unavailable):
        return exc.sent
    if isinstance(exc, WidenError) and exc.status is not None and 300 <= exc.status < 500:
        return False
    return True


class _Response:
    """One answer, read whole: what the helpers below need of it."""

    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # case-insensitive (aiohttp's CIMultiDictProxy)
        self.body = body

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """The body decoded by the charset its Content-Type names (UTF-8 otherwise), as httpx did."""
        charset = "utf-8"
        for parameter in self.headers.get("Content-Type", "").split(";")[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "charset" and value.strip(' "'):
                charset = value.strip(' "')
        try:
            return self.body.decode(charset, errors="replace")
        except (LookupError, UnicodeError):  # an unknown charset, or one that is no text encoding (idna)
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not (json.loads finds UTF-8/16/32 itself)."""
        try:
            return jsonlib.loads(self.body)
        except RecursionError:  # nested deeper than any answer of the DAM
            raise ValueError("JSON nested too deeply") from None


def _outcome(exc: BaseException) -> str:
    """The label the `on_call` hook receives for a failed operation."""
    for kind, label in (
        (NotFound, "not_found"),
        (Unauthorized, "unauthorized"),
        (RateLimited, "rate_limited"),
        (Unavailable, "unavailable"),
    ):
        if isinstance(exc, kind):
            return label
    return "error"


def _retry_reason(exc: BaseException | None) -> str:
    if isinstance(exc, RateLimited):
        return "429"
    if isinstance(exc, WidenError) and exc.status is not None:
        return "5xx"
    return "network"


def _segment(value: str) -> str:
    """An id as one path segment: quoted, so it can never reach another endpoint."""
    # "." and ".." would be resolved away by URL normalisation; no real id looks like that.
    if value in ("", ".", ".."):
        raise NotFound(f"no such id: {value!r}", status=None)
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate (a JSON escape no real id has): no such id either
        raise NotFound(f"no such id: {value!r}", status=None) from None


async def _read_capped(answer: aiohttp.ClientResponse) -> bytes:
    """The body, decoded, refused past MAX_ANSWER: an answer of the DAM is kilobytes, and a runaway one
    must not take the process's memory."""
    if (answer.content_length or 0) > MAX_ANSWER:
        raise WidenError(f"answer of {answer.content_length} bytes, over {MAX_ANSWER}", status=answer.status)
    chunks, size = [], 0
    async for chunk in answer.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise WidenError(f"answer over {MAX_ANSWER} bytes", status=answer.status)
        chunks.append(chunk)
    return b"".join(chunks)


def _hint_seconds(response: _Response) -> float | None:
    """The server's own wait hint: `X-Ratelimit-Reset` (ISO-8601 time) or `Retry-After` (seconds)."""
    reset = response.headers.get("X-Ratelimit-Reset")
    if reset:
        try:
            when = datetime.fromisoformat(reset.strip())
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return None
    return None


def _body_message(response: _Response, scrub: Callable[[str], str]) -> str:
    """The DAM's own words about an error, if it gave any; scrubbed before it is cut to one line, so that
    a token it echoes cannot survive half cut."""
    try:
        data = response.json()
    except ValueError:
        return _one_line(scrub(response.text))
    if isinstance(data, dict):
        for key in ("error_message", "message", "error", "detail", "description"):
            if isinstance(data.get(key), str):
                return _one_line(scrub(str(data[key])))
    return ""


def _one_line(text: str, limit: int = 200) -> str:
    """Error text fit for one log line or one Slack answer (an HTML error page is not)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _env_proxy(base: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """HTTP(S)_PROXY, ALL_PROXY and NO_PROXY for the DAM, as httpx honoured them; looked up once, not per
    request (aiohttp's trust_env would look again on every call, in a thread, and try ~/.netrc too)."""
    proxies = getproxies()
    if not any(key in proxies for key in ("http", "https", "all")):
        return None, None
    try:
        return get_env_proxy_for_url(base)
    except LookupError:  # NO_PROXY covers the DAM, or no proxy is named for its scheme
        pass
    fallback = proxies.get("all")
    if fallback is None or base.scheme in proxies or (base.host and proxy_bypass(base.host)):
        return None, None
    proxy = URL(fallback)
    if proxy.scheme != "http":  # aiohttp speaks to HTTP proxies only (not socks5://, say)
        return None, None
    auth = aiohttp.BasicAuth(proxy.user, proxy.password or "") if proxy.user else None
    return proxy.with_user(None), auth


class WidenClient:
    """Typed calls to the DAM's API v2. Share one instance per process; close it with `aclose()`."""

    def __init__(
        self,
        base_url: str,
        token: str | SecretStr,
        *,
        rate_limit: float = 45.0,
        timeout: float = 10.0,
        max_attempts: int = 5,
        max_wait: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
        on_call: Callable[[str, str], None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self._max_attempts = max(1, max_attempts)
        self._max_wait = max_wait
        self._on_retry = on_retry
        self._on_call = on_call
        self.limiter = limiter or RateLimiter(rate_limit)
        self._backoff = wait_exponential_jitter(initial=0.2, max=max_wait, jitter=0.2)
        self._inflight: dict[str, asyncio.Future[Asset]] = {}
        # The base, its path prefix (e.g. /v2) included, quoted once here; each request appends its own
        # path and query, already quoted (ids by _segment), and says so (encoded=True) so that neither
        # yarl nor aiohttp quotes or normalises them again.
        self._base = str(URL(base_url.rstrip("/")))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Accept": "application/json",
        }
        self._proxy, self._proxy_auth = _env_proxy(URL(self._base))
        self._http: aiohttp.ClientSession | None = None  # opened by the first request, in its loop
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the WidenClient is closed")
        if self._http is None or self._http.closed:
            # Headers per request, none here: a session's own headers also go to a proxy (the token as
            # Proxy-Authorization, in the clear). Header lines up to 16 KiB, as a CDN's cookies may need.
            self._http = aiohttp.ClientSession(timeout=self._timeout, max_line_size=16384, max_field_size=16384)
        return self._http

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- assets ----------------------------------------------------------------------------------

    async def get_asset(self, asset_id: str) -> Asset:
        """The asset with every expansion the bot shows. Concurrent calls for one id share a request."""
        future = self._inflight.get(asset_id)
        if future is None:
            future = asyncio.ensure_future(self._fetch_asset(asset_id))
            self._inflight[asset_id] = future
            future.add_done_callback(lambda done: self._forget(asset_id, done))
        # shield: one waiter giving up must not cancel the request the others wait on.
        return await asyncio.shield(future)

    def _forget(self, asset_id: str, done: asyncio.Future[Asset]) -> None:
        if self._inflight.get(asset_id) is done:
            del self._inflight[asset_id]
        if not done.cancelled():
            done.exception()  # marks it retrieved even if every waiter left

    async def _fetch_asset(self, asset_id: str) -> Asset:
        with self._operation("get_asset"):
            path = f"/assets/{_segment(asset_id)}"
            response = await self._request("GET", path, params={"expand": ASSET_EXPAND})
            return self._parse(Asset, response)

    # ---- webhook configurations ------------------------------------------------------------------

    async def list_webhooks(
        self, limit: int = MAX_PAGE, offset: int = 0
    ) -> tuple[list[WebhookConfiguration], int | None]:
        """One page of configurations and the total count (None when the DAM does not say)."""
        with self._operation("list_webhooks"):
            params = {"limit": max(1, min(MAX_PAGE, limit)), "offset": max(0, offset)}
            data = self._json(await self._request("GET", "/webhooks/configurations", params=params))
            raw_items = data.get("items") or []
            if not isinstance(raw_items, list):
                raise WidenError("answer has no list of items", status=200)
            items = [self._validate(WebhookConfiguration, item) for item in raw_items]
            total = data.get("total_count", data.get("total"))
            return items, total if isinstance(total, int) else None

    async def all_webhooks(self) -> list[WebhookConfiguration]:
        """Every configuration, page by page: up to the total the DAM reports, or, when it reports none,
        until a page comes back short."""
        found: dict[str, WebhookConfiguration] = {}
        while True:
            page, total = await self.list_webhooks(limit=MAX_PAGE, offset=len(found))
            fresh = {c.id: c for c in page if c.id not in found}
            found.update(fresh)
            done = len(found) >= total if total is not None else len(page) < MAX_PAGE
            if done or not fresh:  # no new one: a DAM that ignores the offset would loop for ever
                return list(found.values())

    async def create_webhook(
        self, event_type: str, delivery_url: str, secret_key: str | SecretStr | None = None
    ) -> str:
        """Creates a configuration; answers its id."""
        with self._operation("create_webhook"):
            body: dict[str, Any] = {"event_type": event_type, "delivery_url": delivery_url}
            if secret_key is not None:
                secret = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) else secret_key
                body["secret_key"] = secret
            response = await self._request("POST", "/webhooks/configurations", json=body, idempotent=False)
            return self._parse(CreatedWebhook, response).id

    async def get_webhook(self, webhook_id: str) -> WebhookConfiguration:
        with self._operation("get_webhook"):
            response = await self._request("GET", f"/webhooks/configurations/{_segment(webhook_id)}")
            return self._parse(WebhookConfiguration, response)

    async def edit_webhook(self, webhook_id: str, **fields: Any) -> None:
        """Changes some of delivery_enabled, delivery_url, event_type, secret_key (PUT, 204)."""
        with self._operation("edit_webhook"):
            body = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in fields.items()}
            await self._request("PUT", f"/webhooks/configurations/{_segment(webhook_id)}", json=body)

    async def delete_webhook(self, webhook_id: str) -> None:
        with self._operation("delete_webhook"):
            await self._request("DELETE", f"/webhooks/configurations/{_segment(webhook_id)}")

    async def ping_webhook(self, webhook_id: str) -> None:
        """Asks the DAM to deliver a `ping` event to the configuration's delivery URL (204)."""
        with self._operation("ping_webhook"):
            await self._request("GET", f"/webhooks/configurations/{_segment(webhook_id)}/ping")

    async def check(self) -> None:
        """A cheap call that proves the URL and the token work; raises otherwise."""
        await self.list_webhooks(limit=1)

    # ---- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """Reports each operation's outcome to the `on_call` hook."""
        try:
            yield
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._report(name, _outcome(exc))
            raise
        self._report(name, "ok")

    def _report(self, name: str, outcome: str) -> None:
        if self._on_call is not None:
            self._on_call(name, outcome)

    async def _request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
        idempotent: bool = True,
    ) -> _Response:
        # A request that must not happen twice (creating a configuration) is retried only when the DAM
        # surely did nothing: a 429, or no connection made. After a timeout or a 5xx it may have.
        retry_on = (retry_if_exception_type((RateLimited, Unavailable)) if idempotent
                    else retry_if_exception(lambda exc: isinstance(exc, RateLimited) or
                                            (isinstance(exc, Unavailable) and not exc.sent)))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            retry=retry_on,
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(method, path, params, json)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _attempt(
        self, method: str, path: str, params: dict[str, Any] | None, json: Any
    ) -> _Response:
        await self.limiter.acquire()
        url = self._base + path + ("?" + urlencode(params) if params else "")
        headers = self._headers
        data: bytes | None = None
        if json is not None:  # encoded as httpx did: compact, UTF-8, no NaN
            data = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            headers = {**headers, "Content-Type": "application/json"}
        session = self._session()
        try:
            async with session.request(
                method, URL(url, encoded=True), data=data, headers=headers,
                allow_redirects=False,  # a redirect is answered as an error, as httpx did
                proxy=self._proxy, proxy_auth=self._proxy_auth,
            ) as answer:
                body = await _read_capped(answer)  # whole, inside the timeout: the connection goes back
                response = _Response(answer.status, answer.reason or "", answer.headers, body)
        except TimeoutError as exc:  # the total timeout, and aiohttp's own (they subclass it)
            raise Unavailable(f"{method} {path}: timed out ({type(exc).__name__})") from exc
        except aiohttp.ClientConnectorError as exc:  # no connection made: the DAM saw nothing
            raise Unavailable(self._network_error(method, path, exc), sent=False) from exc
        # ValueError: aiohttp refuses a header (a token with a line break); httpx said LocalProtocolError.
        except (aiohttp.ClientError, ValueError) as exc:
            raise Unavailable(self._network_error(method, path, exc)) from exc
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug('HTTP Request: %s %s "%d %s"', method, url, response.status, response.reason)
        if response.is_success:
            return response
        raise self._error(method, path, response)

    def _network_error(self, method: str, path: str, exc: Exception) -> str:
        return _one_line(self._scrub(f"{method} {path}: {type(exc).__name__}: {exc}"))

    def _error(self, method: str, path: str, response: _Response) -> WidenError:
        status = response.status
        detail = _body_message(response, self._scrub)
        message = self._scrub(
            f"{method} {path}: {status} {response.reason}" + (f": {detail}" if detail else "")
        )
        if status == 429:
            hint = _hint_seconds(response)
            if hint is None:
                wait = _RATE_WINDOW
            elif hint <= 0:  # a reset already past: the answer took a while, or the DAM's clock is behind ours
                wait = _PAST_RESET_WAIT
            else:
                wait = min(self._max_wait, hint)
            self.limiter.pause(wait)  # everyone sharing this client waits, not only this caller
            return RateLimited(message, retry_after=wait, status=status)
        if status >= 500:
            return Unavailable(message, status=status)
        if status == 404:
            return NotFound(message, status=status)
        if status in (401, 403):
            return Unauthorized(message, status=status)
        return BadRequest(message, status=status)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return exc.retry_after
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        if self._on_retry is not None:
            self._on_retry(_retry_reason(state.outcome.exception() if state.outcome else None))

    def _scrub(self, text: str) -> str:
        secret = self._token.get_secret_value()
        if len(secret) < 6:  # no real token is this short, and replacing it would garble every message
            return text
        for form in (secret, quote(secret, safe=""), quote_plus(secret)):  # as sent, and as echoed in a URL
            text = text.replace(form, "***")
        return text

    def _json(self, response: _Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise WidenError("answer is not JSON", status=response.status) from None
        if not isinstance(data, dict):
            raise WidenError("answer is not a JSON object", status=response.status)
        return data

    def _parse(self, model: type[M], response: _Response) -> M:
        return self._validate(model, self._json(response))

    def _validate(self, model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise WidenError(f"unexpected {model.__name__} answer: {problems}", status=200) from None
