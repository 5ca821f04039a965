"""A local Slack Web API that records and prints what the bot sends.

It answers the handful of methods the bot uses the way Slack does (HTTP 200 with `{"ok": false, ...}` for
API errors, 429 with Retry-After when a channel is posted to too fast), validates Block Kit with
slack_sdk's own models, and prints every message in a readable form. Tests point slack_sdk's
`AsyncWebClient(base_url=sandbox_url)` at it; `fail_next` and `reject_images` make it misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from aiohttp import web
from slack_sdk.models.blocks import Block

MAX_BLOCKS = 50
TEAM_ID = "T0SANDBOX"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"

Params = dict[str, Any]
Answer = tuple[int, Any, dict[str, str]]  # status, JSON body (or text), headers


class ApiError(Exception):
    """An API-level error: Slack answers it with HTTP 200 and `{"ok": false, "error": ...}`."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class _Fault:
    status: int
    error: str | None
    retry_after: int | None
    after_acting: bool = False


def _seed_users() -> dict[str, dict[str, Any]]:
    def user(user_id: str, name: str, *, admin: bool) -> dict[str, Any]:
        return {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "real_name": name.replace("-", " ").title(),
            "deleted": False,
            "is_admin": admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_bot": False,
            "profile": {"display_name": name},
        }

    return {
        "U0ADMIN": user("U0ADMIN", "workspace-admin", admin=True),
        "U0MEMBER": user("U0MEMBER", "team-member", admin=False),
    }


class SlackSandbox:
    def __init__(
        self,
        *,
        token: str = "xoxb-sandbox-token",
        channel_rate: float | None = None,
        channel_burst: int = 3,
        out: TextIO | None = None,
    ) -> None:
        self.token = token
        self.channel_rate = channel_rate
        self.channel_burst = channel_burst
        self.out = out
        self.reject_images = False
        self.answer_delay: dict[str, float] = {}  # method -> seconds to wait after acting, before answering
        self.on_message: Callable[[dict[str, Any]], None] | None = None  # called with each message posted
        self.messages: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.users: dict[str, dict[str, Any]] = _seed_users()
        self._faults: dict[str, deque[_Fault]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, last refill)
        self._last_ts = 0.0
        self._root_url: str | None = None
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[Params], Answer]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "users.info": self._users_info,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
        }
        self.app = web.Application()
        self.app.router.add_route("*", "/api/{method}", self._handle_api)
        self.app.router.add_post("/response/{key}", self._handle_response_url)

    # ---- life -----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the Web API base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self._root_url = f"http://{host}:{bound_port}/"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        if self._root_url is None:
            raise RuntimeError("the Slack sandbox is not started")
        return self._root_url + "api/"

    # ---- test controls --------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        n: int = 1,
        *,
        status: int = 503,
        error: str | None = None,
        retry_after: int | None = None,
        after_acting: bool = False,
    ) -> None:
        """The next `n` calls of `method` fail: with `error`, HTTP 200 and that API error; else `status`.
        `after_acting`: the call takes effect first and only its answer fails (a lost answer); with
        status 0 the connection is closed instead of answering."""
        queue = self._faults.setdefault(method, deque())
        queue.extend(_Fault(status, error, retry_after, after_acting) for _ in range(n))

    def new_response_url(self) -> str:
        """A response URL like the one Slack hands a slash command."""
        key = secrets.token_urlsafe(16)
        self.responses[key] = []
        return f"{self.base_url.removesuffix('api/')}response/{key}"

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["channel"] == channel]

    # ---- HTTP -----------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _read_params(request)
        status, body, headers = await self._dispatch(method, request, params)
        queue = self._faults.get(method)
        lost_answer = queue.popleft() if queue and queue[0].after_acting else None
        delay = self.answer_delay.get(method, 0.0)
        if delay:  # the call took effect, the answer is late: a crash in between is the hard case
            await asyncio.sleep(delay)
        if lost_answer is not None:  # it took effect; the caller never learns so
            self.calls.append((method, f"lost_{lost_answer.status}"))
            if lost_answer.status == 0:
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)  # never reaches the caller: the connection is gone
            return web.Response(text=f"{lost_answer.status} sandbox failure", status=lost_answer.status)
        if isinstance(body, dict):
            self.calls.append((method, "ok" if body.get("ok") else str(body.get("error"))))
        else:
            self.calls.append((method, f"http_{status}"))
        if isinstance(body, dict):
            return web.json_response(body, status=status, headers=headers)
        return web.Response(text=str(body), status=status, headers=headers)

    async def _dispatch(self, method: str, request: web.Request, params: Params) -> Answer:
        fault = self._next_fault(method)
        if fault is not None:
            return fault
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = bearer or str(params.get("token") or "")
        if not token:
            return _error("not_authed")
        if token != self.token:
            return _error("invalid_auth")
        handler = self._methods.get(method)
        if handler is None:
            return _error("unknown_method")
        try:
            return handler(params)
        except ApiError as exc:
            return _error(exc.error, **exc.extra)

    def _next_fault(self, method: str) -> Answer | None:
        queue = self._faults.get(method)
        if not queue or queue[0].after_acting:  # that one lets the call act, then fails its answer
            return None
        fault = queue.popleft()
        if fault.error is not None:
            return _error(fault.error)
        if fault.status == 429:
            return _rate_limited(fault.retry_after or 1)
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return fault.status, f"{fault.status} sandbox failure", headers

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if key not in self.responses:
            return web.Response(status=404, text="no_such_response_url")
        try:
            payload = json.loads(await request.text())
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(payload, dict):
            return web.Response(status=400, text="invalid_payload")
        self.responses[key].append(payload)
        flags = [payload.get("response_type") or "ephemeral"]
        flags += [name for name in ("replace_original", "delete_original") if _truthy(payload.get(name))]
        self._print(f"── response_url  ({', '.join(flags)})", payload)
        return web.Response(text="ok")

    # ---- methods --------------------------------------------------------------------------------

    def _auth_test(self, params: Params) -> Answer:
        return _ok(
            url="https://sandbox.slack.com/",
            team="Sandbox",
            user="widen-bot",
            team_id=TEAM_ID,
            user_id=BOT_USER_ID,
            bot_id=BOT_ID,
        )

    def _post_message(self, params: Params) -> Answer:
        channel = _require_channel(params)
        retry_after = self._take_token(channel)
        if retry_after is not None:
            return _rate_limited(retry_after)
        blocks = self._checked_content(params)
        msg: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": self._new_ts(),
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": params.get("text") or "",
            "blocks": blocks,
        }
        if params.get("thread_ts"):
            msg["thread_ts"] = str(params["thread_ts"])
        metadata = _metadata(params)
        if metadata is not None:
            msg["metadata"] = metadata
        self.messages.append(msg)
        if self.on_message is not None:
            self.on_message(msg)
        thread = f"  (thread {msg['thread_ts']})" if "thread_ts" in msg else ""
        self._print(f"── #{channel}{thread}", msg)
        return _ok(channel=channel, ts=msg["ts"], message=_public(msg))

    def _update(self, params: Params) -> Answer:
        channel = _require_channel(params)
        ts = str(params.get("ts") or "")
        found = next((m for m in self.messages if m["channel"] == channel and m["ts"] == ts), None)
        if found is None:
            raise ApiError("message_not_found")
        blocks = self._checked_content(params)
        found["text"] = params.get("text") or ""
        found["blocks"] = blocks
        metadata = _metadata(params)
        if metadata is not None:
            found["metadata"] = metadata
        self._print(f"── #{channel}  (updated {ts})", found)
        return _ok(channel=channel, ts=ts, text=found["text"], message=_public(found))

    def _post_ephemeral(self, params: Params) -> Answer:
        channel = _require_channel(params)
        user = str(params.get("user") or "")
        if not user:
            raise ApiError("user_not_found")
        blocks = self._checked_content(params)
        msg = {
            "channel": channel,
            "user": user,
            "ts": self._new_ts(),
            "text": params.get("text") or "",
            "blocks": blocks,
        }
        if params.get("thread_ts"):
            msg["thread_ts"] = str(params["thread_ts"])
        self.ephemerals.append(msg)
        self._print(f"── #{channel}  (only visible to {user})", msg)
        return _ok(message_ts=msg["ts"])

    def _users_info(self, params: Params) -> Answer:
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            raise ApiError("user_not_found")
        return _ok(user=user)

    def _history(self, params: Params) -> Answer:
        """Parent messages of a channel, newest first, paged by an opaque cursor."""
        channel = _require_channel(params)
        inclusive = _truthy(params.get("inclusive"))
        oldest, latest = _ts_value(params.get("oldest")), _ts_value(params.get("latest"))
        with_metadata = _truthy(params.get("include_all_metadata"))
        found = []
        for msg in reversed(self.messages):
            if msg["channel"] != channel or msg.get("thread_ts", msg["ts"]) != msg["ts"]:
                continue  # thread replies live in conversations.replies, not here
            ts = Decimal(msg["ts"])
            if oldest is not None and (ts < oldest or (ts == oldest and not inclusive)):
                continue
            if latest is not None and (ts > latest or (ts == latest and not inclusive)):
                continue
            found.append(msg)
        start = _decode_cursor(params.get("cursor"))
        limit = min(max(_int(params.get("limit"), 100), 1), 999)
        page = found[start : start + limit]
        has_more = start + limit < len(found)
        messages = [self._shown(msg, with_metadata) for msg in page]
        next_cursor = _encode_cursor(start + limit) if has_more else ""
        return _ok(
            messages=messages,
            has_more=has_more,
            pin_count=0,
            response_metadata={"next_cursor": next_cursor},
        )

    def _replies(self, params: Params) -> Answer:
        """A thread: its parent first, then the replies, oldest first (one page: threads here are short)."""
        channel = _require_channel(params)
        ts = str(params.get("ts") or "")
        with_metadata = _truthy(params.get("include_all_metadata"))
        thread = [m for m in self.messages if m["channel"] == channel and m.get("thread_ts", m["ts"]) == ts]
        if not thread:
            raise ApiError("thread_not_found")
        return _ok(messages=[self._shown(m, with_metadata) for m in thread], has_more=False,
                   response_metadata={"next_cursor": ""})

    def _shown(self, msg: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        shown = {k: v for k, v in msg.items() if k != "channel"}
        if not with_metadata:
            shown.pop("metadata", None)
        replies = sum(1 for m in self.messages if m.get("thread_ts") == msg["ts"] and m["ts"] != msg["ts"])
        if replies:
            shown["thread_ts"] = msg["ts"]
            shown["reply_count"] = replies
        return shown

    # ---- helpers --------------------------------------------------------------------------------

    def _checked_content(self, params: Params) -> list[dict[str, Any]]:
        """The message's blocks, validated the way Slack does; raises ApiError like Slack answers."""
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks) if blocks.strip() else None
            except json.JSONDecodeError as exc:
                raise ApiError("invalid_blocks_format") from exc
        if blocks is not None and not isinstance(blocks, list):
            raise ApiError("invalid_blocks_format")
        if not params.get("text") and not blocks:
            raise ApiError("no_text")
        blocks = blocks or []
        errors = block_errors(blocks)
        if errors:
            raise ApiError("invalid_blocks", errors=errors)
        if self.reject_images:
            pointers = image_pointers(blocks)
            if pointers:
                # What Slack says when it cannot fetch an image it was given.
                failure = f"downloading image failed [json-pointer:{pointers[0]}]"
                raise ApiError("invalid_blocks", errors=[failure])
        return blocks

    def _take_token(self, channel: str) -> int | None:
        """Token bucket per channel; the seconds to wait when the channel is over its rate."""
        if self.channel_rate is None:
            return None
        now = time.monotonic()
        tokens, last = self._buckets.get(channel, (float(self.channel_burst), now))
        tokens = min(float(self.channel_burst), tokens + (now - last) * self.channel_rate)
        if tokens < 1:
            self._buckets[channel] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.channel_rate))
        self._buckets[channel] = (tokens - 1, now)
        return None

    def _new_ts(self) -> str:
        # Unique and increasing even when two messages land in the same microsecond.
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        return f"{self._last_ts:.6f}"

    def _print(self, title: str, message: dict[str, Any]) -> None:
        if self.out is None:
            return
        self.out.write(f"{title}\n{render(message)}\n\n")
        self.out.flush()


# ---- request and answer shapes -------------------------------------------------------------------


async def _read_params(request: web.Request) -> Params:
    """Query string, then a JSON or form body: slack_sdk sends chat.* as JSON, users.info as a GET."""
    params: Params = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text() or "{}")
            except json.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                params.update(body)
        else:
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


def _ok(**fields: Any) -> Answer:
    return 200, {"ok": True, **fields}, {}


def _error(error: str, **extra: Any) -> Answer:
    return 200, {"ok": False, "error": error, **extra}, {}


def _rate_limited(retry_after: int) -> Answer:
    return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}


def _require_channel(params: Params) -> str:
    channel = str(params.get("channel") or "")
    if not channel:
        raise ApiError("channel_not_found")
    return channel


def _metadata(params: Params) -> dict[str, Any] | None:
    raw = params.get("metadata")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ApiError("invalid_metadata_format") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("event_type"), str):
        raise ApiError("invalid_metadata_format")
    payload = raw.get("event_payload", {})
    if not isinstance(payload, dict):
        raise ApiError("invalid_metadata_schema")
    return {"event_type": raw["event_type"], "event_payload": payload}


def _public(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != "channel"}


def _truthy(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes")


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _ts_value(value: object) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ApiError("invalid_ts_oldest") from exc


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: object) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(str(cursor)).decode().removeprefix("offset:"))
    except ValueError as exc:
        raise ApiError("invalid_cursor") from exc


# ---- Block Kit checks ----------------------------------------------------------------------------


def block_errors(blocks: list[Any]) -> list[str]:
    """Slack-style error strings for blocks that slack_sdk's models refuse (empty when all valid)."""
    if len(blocks) > MAX_BLOCKS:
        return [f"must provide at most {MAX_BLOCKS} items [json-pointer:/blocks]"]
    errors = []
    for index, block in enumerate(blocks):
        try:
            parsed = Block.parse(block) if isinstance(block, dict) else None
            if parsed is None:
                raise ValueError("unsupported block type")
            parsed.validate_json()
            parsed.to_dict()  # validates the nested elements and text objects too
        except Exception as exc:  # slack_sdk raises several kinds for a bad block
            errors.append(f"{exc} [json-pointer:/blocks/{index}]")
    return errors


def image_pointers(blocks: list[dict[str, Any]]) -> list[str]:
    """JSON pointers of every image URL in the blocks (image blocks, accessories, context images)."""
    pointers = []
    for index, block in enumerate(blocks):
        if block.get("type") == "image":
            pointers.append(f"/blocks/{index}/image_url")
        if (block.get("accessory") or {}).get("type") == "image":
            pointers.append(f"/blocks/{index}/accessory/image_url")
        for pos, element in enumerate(block.get("elements") or []):
            if isinstance(element, dict) and element.get("type") == "image":
                pointers.append(f"/blocks/{index}/elements/{pos}/image_url")
    return pointers


# ---- readable printing ---------------------------------------------------------------------------

_ENTITY = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def display(text: str) -> str:
    """mrkdwn as a person reads it: links as "label (url)", dates by their fallback, entities decoded."""

    def replace(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return "@" + target[1:].split("^")[0]
        if target.startswith(("@", "#")):
            return label or target
        return f"{label} ({target})" if label else target

    return unescape(_ENTITY.sub(replace, text))


def unescape(text: str) -> str:
    # `&amp;` last, so "&amp;lt;" shows as "&lt;", as Slack shows it.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text_of(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text") or "")
    return display(text) if obj.get("type") == "mrkdwn" else unescape(text)


def _element_line(element: Any) -> str:
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "image":
        return f"[image: {element.get('image_url')}]"
    if kind == "button":
        return f"[ {_text_of(element.get('text'))} ]"
    if kind in ("mrkdwn", "plain_text"):
        return _text_of(element)
    return f"[{kind}]"


def _field_line(field: Any) -> str:
    # A field is "*Label*\nvalue" by convention: show it as "Label: value".
    text = _text_of(field)
    label, sep, value = text.partition("\n")
    if sep and label.startswith("*") and label.endswith("*"):
        return f"{label.strip('*')}: {value}"
    return text


def _block_lines(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return [f"# {_text_of(block.get('text'))}"]
    if kind == "divider":
        return ["  ────────"]
    if kind == "image":
        return [_element_line(block)]
    if kind == "context":
        return ["  " + "  ".join(_element_line(e) for e in block.get("elements") or [])]
    if kind == "actions":
        return ["  ".join(_element_line(e) for e in block.get("elements") or [])]
    if kind == "section":
        lines = [_text_of(block["text"])] if block.get("text") else []
        lines += [_field_line(f) for f in block.get("fields") or []]
        if block.get("accessory"):
            lines.append(_element_line(block["accessory"]))
        return lines
    return [f"[{kind} block]"]


def render(message: dict[str, Any]) -> str:
    """A stored message (or response-url payload) as readable text."""
    blocks = message.get("blocks") or []
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, dict):
            lines += _block_lines(block)
    if not blocks:
        lines.append(display(str(message.get("text") or "")))
    metadata = message.get("metadata")
    if isinstance(metadata, dict):
        lines.append(f"  (metadata: {metadata.get('event_type')})")
    return "\n".join(lines)


# ---- reading the channel -----------------------------------------------------------------------------


def announcements(messages: list[dict[str, Any]]) -> list[str]:
    """One text per announcement: a card, or a digest together with its thread replies."""
    units: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        units[message.get("thread_ts") or message["ts"]].append(json.dumps(message.get("blocks") or []))
    return ["\n".join(texts) for texts in units.values()]


def count_announced(messages: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, int]:
    """How many announcements name each asset (by the asset's id or its external id)."""
    counts = dict.fromkeys(keys, 0)
    for text in announcements(messages):
        for asset_id, external_id in keys.items():
            if asset_id in text or f"/{external_id}/" in text:
                counts[asset_id] += 1
    return counts
