"""DamSandbox: a local DAM that answers the API v2 subset the bot uses and really delivers signed webhooks.

API (under /v2, `Authorization: Bearer <token>`): `GET /assets/{id}`, `GET|POST /webhooks/configurations`,
`GET|PUT|DELETE /webhooks/configurations/{id}`, `GET /webhooks/configurations/{id}/ping`. Like the real
DAM it limits the account to `rate_limit` requests per second (429 with `X-Ratelimit-Reset`), and it can
answer in the vendor guide's shape ("true"/"false" strings, create answers `webhook_configuration_id`) or
the API description's (booleans, create answers `id`).

Deliveries are JSON POSTs shaped like ../shared/fixtures/events/*.json; a configuration with a secret_key
adds `<signature_header>: sha256=<hex HMAC-SHA256 of the raw body>`, the way the bot verifies them.

Sample assets live in widen/samples/*.json. Because "now" moves, a date there may be written relative to
the moment the samples are loaded: "+10d", "-5d", "+3h", "-30m" or "now" in any field named `*_date` or
`valid_until` becomes an ISO-8601 UTC time that far from now.

It prints nothing; callers read `calls`, `requests`, `deliveries` and decide what to show.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import string
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Literal

import aiohttp
from aiohttp import web

from widen.models import ASSET_EVENT_TYPES, PING

ADMIN_USERNAME = "dam.admin@example.com"
ADMIN_USER_ID = "5f6f1f60-1b5e-4690-8ba0-a40c09b2cf0c"  # the user of the fixtures
EXPANDABLE = ("asset_properties", "embeds", "file_properties", "metadata", "security", "status", "thumbnails")
MAX_PAGE = 10
EDITABLE = {"delivery_enabled": bool, "delivery_url": str, "event_type": str, "secret_key": str}

_RELATIVE = re.compile(r"^([+-])(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def iso(moment: datetime) -> str:
    """The DAM's date format: UTC, seconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_relative_dates(value: Any, now: datetime, key: str = "") -> Any:
    """Replaces "+10d"-style strings in date fields by the ISO time that far from `now`."""
    if isinstance(value, dict):
        return {k: resolve_relative_dates(v, now, k) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_relative_dates(v, now, key) for v in value]
    if isinstance(value, str) and (key.endswith("_date") or key == "valid_until"):
        if value == "now":
            return iso(now)
        match = _RELATIVE.match(value)
        if match:
            sign, amount, unit = match.groups()
            delta = timedelta(**{_UNITS[unit]: int(amount)})
            return iso(now + delta if sign == "+" else now - delta)
    return value


def load_sample_assets() -> list[dict[str, Any]]:
    """The packaged sample assets, in file-name order, with relative dates resolved."""
    now = datetime.now(UTC)
    folder = resources.files("widen") / "samples"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return [resolve_relative_dates(json.loads(f.read_text(encoding="utf-8")), now) for f in files]


def sign(body: bytes, secret_key: str) -> str:
    return "sha256=" + hmac.new(secret_key.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Configuration:
    id: str
    event_type: str
    delivery_url: str
    secret_key: str | None = None
    delivery_enabled: bool = True
    created_by: str = ADMIN_USER_ID
    created_date: str = field(default_factory=lambda: iso(datetime.now(UTC)))
    last_delivered_date: str | None = None
    last_pinged_date: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw (still percent-encoded), without the query
    query: dict[str, list[str]]
    status: int
    at: float  # time.monotonic()


@dataclass
class _Fault:
    remaining: int
    status: int
    path_prefix: str
    reset_after: float


class DamSandbox:
    def __init__(
        self,
        *,
        token: str = "sandbox-dam-token",
        rate_limit: float | None = 50.0,
        response_shape: Literal["guide", "openapi"] = "guide",
        signature_header: str = "X-Widen-Signature",
        load_samples: bool = True,
        duplicate_deliveries: bool = False,
    ) -> None:
        self.token = token  # change it at runtime to simulate a revoked token
        self.rate_limit = rate_limit
        self.response_shape = response_shape
        self.signature_header = signature_header
        self.duplicate_deliveries = duplicate_deliveries  # a DAM that delivers everything twice
        # The API description leaves open whether PUT edits or replaces a configuration: True replaces.
        self.put_replaces = False
        self.latency = 0.0  # seconds added to every API answer
        self.list_reports_total = True  # False: configuration lists leave out total_count
        self.delivery_attempts = 3
        self.delivery_timeout = 5.0
        self.calls: list[tuple[str, str, int]] = []  # (method, raw path, status)
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[dict[str, Any]] = []
        self.assets: dict[str, dict[str, Any]] = {}
        self.configurations: dict[str, Configuration] = {}
        self.samples = load_sample_assets() if load_samples else []
        for sample in self.samples:
            self.assets[sample["id"]] = copy.deepcopy(sample)
        self._next_sample = 0
        self._faults: list[_Fault] = []
        self._window: deque[float] = deque()  # monotonic times of the answered requests of the last second
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self.app = self._build_app()

    # ---- life --------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serves the API; answers its base URL, e.g. http://127.0.0.1:PORT/v2."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}/v2"
        return self._base_url

    async def stop(self) -> None:
        """Stops serving; deliveries still running are cancelled (await wait_deliveries_idle first)."""
        if self._runner is not None:
            await self._runner.cleanup()  # runs _shutdown through the app's on_cleanup
            self._runner = None
        await self._shutdown()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the sandbox is not started")
        return self._base_url

    # ---- test controls -------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int, path_prefix: str = "", *, reset_after: float = 0.5) -> None:
        """The next `n` requests whose path starts with `path_prefix` (with or without /v2) answer
        `status`; a 429 says to come back in `reset_after` seconds."""
        self._faults.append(_Fault(n, status, path_prefix, reset_after))

    def add_asset(self, asset: dict[str, Any]) -> str:
        """Stores an asset without delivering anything; gives it a fresh id if it has none."""
        asset = copy.deepcopy(asset)
        asset.setdefault("id", str(uuid.uuid4()))
        self.assets[asset["id"]] = asset
        return str(asset["id"])

    async def upload(self, asset: dict[str, Any] | None = None, *, username: str = ADMIN_USERNAME) -> str:
        """Adds an asset (default: the next sample, cycling, as a new asset) and delivers asset_created."""
        asset_id = self.add_asset(asset if asset is not None else self._fresh_sample())
        await self.emit("asset_created", asset_id, username=username)
        return asset_id

    async def delete_asset(
        self, asset_id: str, *, username: str = ADMIN_USERNAME
    ) -> list[asyncio.Task[dict[str, Any]]]:
        """Removes the asset (its GET answers 404 from now on) and delivers asset_deleted."""
        self.assets.pop(asset_id, None)
        return await self.emit("asset_deleted", asset_id, username=username)

    async def emit(
        self, event_type: str, asset_id: str, *, username: str = ADMIN_USERNAME
    ) -> list[asyncio.Task[dict[str, Any]]]:
        """Delivers an asset event to every enabled configuration of that type; answers the delivery
        tasks (each yields its record). Disabled configurations are recorded as skipped."""
        if event_type not in ASSET_EVENT_TYPES:
            raise ValueError(f"not an asset event type: {event_type}")
        tasks: list[asyncio.Task[dict[str, Any]]] = []
        for config in list(self.configurations.values()):
            if config.event_type == event_type:
                body = self._event(config, event_type, username) | {
                    "asset_id": asset_id,
                    "event_type": event_type,
                    "date_created": iso(datetime.now(UTC)),
                }
                tasks += self._dispatch(config, body)
        return tasks

    async def wait_deliveries_idle(self) -> None:
        """Returns once every delivery started so far (and any they started) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- deliveries ------------------------------------------------------------------------------------

    def _fresh_sample(self) -> dict[str, Any]:
        if not self.samples:
            raise RuntimeError("no sample assets loaded; pass an asset")
        sample = self.samples[self._next_sample % len(self.samples)]
        self._next_sample += 1
        # A new asset each time: fresh id and external id (the content URLs carry the external id).
        old_external = str(sample.get("external_id") or "")
        new_external = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        text = json.dumps(sample)
        if old_external:
            text = text.replace(old_external, new_external)
        asset: dict[str, Any] = json.loads(text)
        now = iso(datetime.now(UTC))
        asset.update(
            id=str(uuid.uuid4()),
            external_id=new_external,
            version_id=str(uuid.uuid4()),
            created_date=now,
            last_update_date=now,
            file_upload_date=now,
        )
        return asset

    def _event(self, config: Configuration, event_type: str, username: str) -> dict[str, Any]:
        # A stable id per username; the fixtures' user for the default admin.
        user_id = (
            ADMIN_USER_ID if username == ADMIN_USERNAME else str(uuid.uuid5(uuid.NAMESPACE_URL, username))
        )
        return {
            "webhook_configuration_id": config.id,
            "webhook_delivery_id": str(uuid.uuid4()),
            "event_context": {"user": {"id": user_id, "username": username}},
            "event_type": event_type,
        }

    def _dispatch(self, config: Configuration, body: dict[str, Any]) -> list[asyncio.Task[dict[str, Any]]]:
        if not config.delivery_enabled:
            self.deliveries.append(self._record(config, body) | {"error": "delivery disabled", "attempts": 0})
            return []
        copies = 2 if self.duplicate_deliveries else 1
        tasks = [asyncio.ensure_future(self._deliver(config, body)) for _ in range(copies)]
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return tasks

    def _record(self, config: Configuration, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "webhook_configuration_id": config.id,
            "webhook_delivery_id": body["webhook_delivery_id"],
            "event_type": body["event_type"],
            "url": config.delivery_url,
            "status": None,
            "error": None,
            "attempts": 0,
            "body": body,
        }

    async def _deliver(self, config: Configuration, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs one delivery, retrying network errors and 5xx with a short backoff; records the end."""
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "dam-sandbox-webhooks/1.0"}
        if config.secret_key:
            headers[self.signature_header] = sign(raw, config.secret_key)
        record = self._record(config, body)
        session = self._client_session()
        for attempt in range(1, self.delivery_attempts + 1):
            record["attempts"] = attempt
            try:
                timeout = aiohttp.ClientTimeout(total=self.delivery_timeout)
                async with session.post(
                    config.delivery_url, data=raw, headers=headers, timeout=timeout
                ) as resp:
                    await resp.read()
                    record.update(status=resp.status, error=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                record.update(status=None, error=f"{type(exc).__name__}: {exc}")
            if record["status"] is not None and record["status"] < 500:
                break
            if attempt < self.delivery_attempts:
                await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        if record["status"] is not None and 200 <= record["status"] < 300:
            config.last_delivered_date = iso(datetime.now(UTC))
        self.deliveries.append(record)
        return record

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _shutdown(self, _app: web.Application | None = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the API ---------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_cleanup.append(self._shutdown)
        app.router.add_get("/v2/assets/{id}", self._get_asset)
        app.router.add_get("/v2/webhooks/configurations", self._list_configurations)
        app.router.add_post("/v2/webhooks/configurations", self._create_configuration)
        app.router.add_get("/v2/webhooks/configurations/{id}", self._get_configuration)
        app.router.add_put("/v2/webhooks/configurations/{id}", self._edit_configuration)
        app.router.add_delete("/v2/webhooks/configurations/{id}", self._delete_configuration)
        app.router.add_get("/v2/webhooks/configurations/{id}/ping", self._ping_configuration)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        response: web.StreamResponse
        try:
            refusal = self._fault(request) or self._rate_limited() or self._unauthorized(request)
            response = refusal if refusal is not None else await handler(request)
        except web.HTTPException as exc:  # the router's 404/405
            response = _error(exc.status, exc.reason)
        if response.status < 400 and self.rate_limit is not None:
            response.headers["X-Ratelimit-Limit"] = f"{self.rate_limit:g}/second"
            response.headers["X-Ratelimit-Remaining"] = str(max(0, int(self.rate_limit) - len(self._window)))
        raw_path = request.raw_path.split("?", 1)[0]
        query = {key: request.query.getall(key) for key in request.query}
        self.calls.append((request.method, raw_path, response.status))
        self.requests.append(
            RecordedRequest(request.method, raw_path, query, response.status, time.monotonic())
        )
        return response

    def _fault(self, request: web.Request) -> web.Response | None:
        self._faults = [f for f in self._faults if f.remaining > 0]
        relative = request.path.removeprefix("/v2")
        for fault in self._faults:
            if request.path.startswith(fault.path_prefix) or relative.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.status == 429:
                    return self._too_many(time.monotonic() + fault.reset_after)
                return _error(fault.status, "injected failure")
        return None

    def _rate_limited(self) -> web.Response | None:
        """A sliding one-second window over the answered requests, like the DAM's per-account limit."""
        if self.rate_limit is None:
            return None
        now = time.monotonic()
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if len(self._window) >= self.rate_limit:
            return self._too_many(self._window[0] + 1.0)
        self._window.append(now)
        return None

    def _too_many(self, reset_monotonic: float) -> web.Response:
        wait = max(0.0, reset_monotonic - time.monotonic())
        # Milliseconds, rounded up, so a client waiting until then is never early.
        reset_ms = math.ceil((time.time() + wait) * 1000)
        reset = datetime.fromtimestamp(reset_ms / 1000, UTC).isoformat(timespec="milliseconds")
        response = _error(429, "Too Many Requests")
        response.headers["X-Ratelimit-Reset"] = reset.replace("+00:00", "Z")
        response.headers["X-Ratelimit-Limit"] = f"{self.rate_limit or 50:g}/second"
        return response

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return None
        return _error(401, "Invalid or expired access token")

    async def _get_asset(self, request: web.Request) -> web.Response:
        asset = self.assets.get(request.match_info["id"])
        if asset is None:
            return _error(404, "Asset not found")
        expand = {part for value in request.query.getall("expand", []) for part in value.split(",") if part}
        body = {
            key: (value if key not in EXPANDABLE or key in expand else None) for key, value in asset.items()
        }
        body["expanded"] = {key: key in expand for key in EXPANDABLE}
        return web.json_response(body)

    async def _list_configurations(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", MAX_PAGE))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return _error(400, "limit and offset must be integers")
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            return _error(400, f"limit must be between 1 and {MAX_PAGE}, offset at least 0")
        configs = list(self.configurations.values())
        page: dict[str, Any] = {
            "item_type": "webhook_configuration",
            "total_count": len(configs),
            "limit": limit,
            "offset": offset,
            "items": [self._view(c) for c in configs[offset : offset + limit]],
        }
        if not self.list_reports_total:
            del page["total_count"]
        return web.json_response(page)

    async def _create_configuration(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        problem = _check_fields(body, required=("delivery_url", "event_type"))
        if problem:
            return _error(400, problem)
        config = Configuration(
            id=str(uuid.uuid4()),
            event_type=body["event_type"],
            delivery_url=body["delivery_url"],
            secret_key=body.get("secret_key") or None,
        )
        self.configurations[config.id] = config
        key = "id" if self.response_shape == "openapi" else "webhook_configuration_id"
        return web.json_response({key: config.id}, status=201)

    async def _get_configuration(self, request: web.Request) -> web.Response:
        config = self.configurations.get(request.match_info["id"])
        if config is None:
            return _error(404, "Webhook configuration not found")
        return web.json_response(self._view(config))

    async def _edit_configuration(self, request: web.Request) -> web.Response:
        config = self.configurations.get(request.match_info["id"])
        if config is None:
            return _error(404, "Webhook configuration not found")
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        if isinstance(body.get("delivery_enabled"), str):  # the guide's strings, accepted like booleans
            body["delivery_enabled"] = body["delivery_enabled"].lower() == "true"
        problem = _check_fields(body, required=("delivery_url", "event_type") if self.put_replaces else ())
        if problem:
            return _error(400, problem)
        if self.put_replaces:  # what is not sent is gone, as a full-replace PUT would have it
            config.secret_key = None
        for key, value in body.items():
            setattr(config, key, (value or None) if key == "secret_key" else value)
        return web.Response(status=204)

    async def _delete_configuration(self, request: web.Request) -> web.Response:
        if self.configurations.pop(request.match_info["id"], None) is None:
            return _error(404, "Webhook configuration not found")
        return web.Response(status=204)

    async def _ping_configuration(self, request: web.Request) -> web.Response:
        config = self.configurations.get(request.match_info["id"])
        if config is None:
            return _error(404, "Webhook configuration not found")
        config.last_pinged_date = iso(datetime.now(UTC))
        self._dispatch(config, self._event(config, PING, ADMIN_USERNAME))
        return web.Response(status=204)

    def _view(self, config: Configuration) -> dict[str, Any]:
        """A configuration as the API shows it; never the secret_key."""

        def flag(value: bool) -> bool | str:
            return value if self.response_shape == "openapi" else ("true" if value else "false")

        return {
            "webhook_configuration_id": config.id,
            "created_by_user": {"uuid": config.created_by},
            "event_type": config.event_type,
            "created_date": config.created_date,
            "last_delivered_date": config.last_delivered_date,
            "last_pinged_date": config.last_pinged_date,
            "signing_enabled": flag(bool(config.secret_key)),
            "delivery_enabled": flag(config.delivery_enabled),
            "delivery_url": config.delivery_url,
        }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"response_code": status, "error_message": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    return body


def _check_fields(body: dict[str, Any], required: tuple[str, ...]) -> str | None:
    """What is wrong with a create/edit body, or None."""
    for key in required:
        if key not in body:
            return f"{key} is required"
    for key, value in body.items():
        kind = EDITABLE.get(key)
        if kind is None:
            return f"unknown field: {key}"
        if not isinstance(value, kind) and not (key == "secret_key" and value is None):
            return f"{key} must be a {kind.__name__}"
    if "event_type" in body and body["event_type"] not in ASSET_EVENT_TYPES:
        return f"event_type must be one of {', '.join(ASSET_EVENT_TYPES)}"
    if "delivery_url" in body and not re.match(r"^https?://[^\s/]+", body["delivery_url"]):
        return "delivery_url must be an http(s) URL"
    return None
