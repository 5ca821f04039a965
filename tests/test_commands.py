"""`/widen` over real HTTP: requests signed as Slack signs them, answers read from the local Slack's response
URLs, the local DAM recording every call it gets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import SOCKET_MODE
from receiver.app import INBOX, WIDEN
from receiver.inbox import Route
from receiver.routes import Settled, settle_pending_routes
from receiver.sandbox_run import CHANNEL, Stack, running_stack
from tests.conftest import SHARED_SECRET, deliver, eventually, fixture_json
from tests.slack_requests import ADMIN, MEMBER, answer, answers, buttons, press, run, shown, slash
from widen.models import ASSET_EVENT_TYPES
from widen.sandbox import Configuration, DamSandbox

SHAPES = ["guide", "openapi"]
SEED_ASSET = "3db58e3c-fe98-4437-9637-df299f9d1b06"


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, *, shape: str = "guide", **settings: Any
) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    """The real server between a local DAM answering in `shape` and the local Slack."""
    settings.setdefault("ping_timeout_seconds", 10)
    async with (
        running_stack(tmp_path / "widen-bot.db", dam=DamSandbox(response_shape=shape),  # type: ignore[arg-type]
                      slack_channel_rate=50.0, widen_webhook_secret=SHARED_SECRET, **settings) as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http,
    ):
        yield stack, http


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    async with serving(tmp_path) as pair:
        yield pair


def add_configuration(stack: Stack, **fields: Any) -> Configuration:
    """A configuration made in the DAM directly (no API call is recorded)."""
    config = Configuration(id=str(uuid.uuid4()), event_type=fields.pop("event_type", "asset_created"),
                           delivery_url=fields.pop("delivery_url", "https://hooks.example.com/dam"), **fields)
    stack.dam.configurations[config.id] = config
    return config


def audit_lines(stack: Stack) -> list[str]:
    return [shown(m) for m in stack.slack.messages_in(CHANNEL) if ":memo:" in shown(m)]


def slack_saw(stack: Stack) -> str:
    """Everything the local Slack received: channel messages, ephemerals and response-URL answers."""
    return json.dumps([stack.slack.messages, stack.slack.ephemerals, stack.slack.responses])


async def create(stack: Stack, http: httpx.AsyncClient, event_type: str = "asset_created") -> Configuration:
    before = set(stack.dam.configurations)
    reply = await run(stack, http, f"create {event_type}")
    (new_id,) = set(stack.dam.configurations) - before
    assert new_id in shown(reply)
    return stack.dam.configurations[new_id]


# ---- help ----------------------------------------------------------------------------------------------


async def test_help_is_open_to_everyone_and_touches_nothing(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    for text in ("help", "", "frobnicate now"):
        sent = await slash(stack, http, text, user=MEMBER)
        assert sent.response.status_code == 200 and sent.response.text == ""
        reply = await answer(stack, sent)
        assert reply["response_type"] == "ephemeral"
        for subcommand in ("list", "create", "inspect", "ping", "enable", "disable", "delete", "status", "retry"):
            assert f"/widen {subcommand}" in shown(reply)
        assert "&lt;event_type&gt;" in shown(reply)  # placeholders escaped, so Slack shows them
    assert "I don't know `frobnicate`" in shown(reply)
    assert stack.dam.calls == []
    assert not [c for c in stack.slack.calls if c[0] == "users.info"]


# ---- list ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_list_pages_through_every_configuration(tmp_path: Path, shape: str):
    async with serving(tmp_path, shape=shape) as (stack, http):
        configs = [add_configuration(stack) for _ in range(23)]
        quiet = add_configuration(stack, event_type="asset_tags_updated", delivery_enabled=False)
        signed = add_configuration(stack, secret_key="s3cr3t-key-of-the-dam-side",
                                   last_delivered_date="2024-05-01T10:00:00Z")
        reply = await run(stack, http, "list")
        text = shown(reply)
        assert "25 webhook configurations" in text
        for config in [*configs, quiet, signed]:
            assert config.id in text
        lines = {line.split("`")[1]: line for section in reply["blocks"] if section["type"] == "section"
                 for line in section["text"]["text"].split("\n")}
        assert "delivery *off*" in lines[quiet.id] and "`asset_tags_updated`" in lines[quiet.id]
        assert "signing off" in lines[quiet.id] and "last delivered never" in lines[quiet.id]
        assert "delivery *on*" in lines[signed.id] and "signing on" in lines[signed.id]
        assert "2024-05-01 10:00 UTC" in lines[signed.id]
        pages = [r for r in stack.dam.requests if r.path == "/v2/webhooks/configurations"]
        assert [r.query["offset"] for r in pages] == [["0"], ["10"], ["20"]]
        assert all(int(r.query["limit"][0]) <= 10 for r in pages)


# ---- create and ping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_create_makes_its_own_url_and_secret_and_the_ping_comes_back(tmp_path: Path, shape: str):
    async with serving(tmp_path, shape=shape) as (stack, http):
        reply = await run(stack, http, "create asset_created")
        (config,) = stack.dam.configurations.values()
        assert config.id in shown(reply) and "Ping" in shown(reply)
        assert buttons(reply)["widen_ping"]["value"] == config.id

        prefix = f"{stack.base_url}/webhooks/widen/"
        assert config.delivery_url.startswith(prefix)
        token = config.delivery_url.removeprefix(prefix)
        assert len(token) >= 32
        assert config.secret_key and len(config.secret_key) >= 43  # 32 random bytes, URL-safe base64
        route = await stack.app[INBOX].route(token)
        assert route is not None and route.configuration_id == config.id and route.secret == config.secret_key
        # Neither the secret nor the route token is ever shown in Slack.
        assert config.secret_key not in slack_saw(stack) and token not in slack_saw(stack)

        (line,) = await eventually(lambda: audit_lines(stack))
        assert "<@U0ADMIN>" in line and "created" in line and config.id in line

        sent = await slash(stack, http, f"ping {config.id}")
        assert "Ping sent" in shown(await answer(stack, sent, 1))
        round_trip = shown(await answer(stack, sent, 2))
        assert "round trip" in round_trip and config.id in round_trip and " s*" in round_trip
        # The DAM delivered to the URL create made, signed with its secret, and the worker posted the ping.
        delivered = [d for d in stack.dam.deliveries if d["event_type"] == "ping"]
        assert delivered and delivered[0]["status"] == 200 and delivered[0]["url"] == config.delivery_url
        await eventually(lambda: any("Ping received" in shown(m) for m in stack.slack.messages_in(CHANNEL)))

        # The Ping button of the create answer does the same.
        pressed = await press(stack, http, "widen_ping", config.id)
        assert "Ping sent" in shown(await answer(stack, pressed, 1))
        assert "round trip" in shown(await answer(stack, pressed, 2))
        assert config.secret_key not in slack_saw(stack)


async def test_create_refuses_an_event_type_the_dam_does_not_know(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    reply = shown(await run(stack, http, "create asset_exploded"))
    assert "asset_exploded" in reply and "not an event type" in reply
    for event_type in ASSET_EVENT_TYPES:
        assert f"`{event_type}`" in reply
    assert stack.dam.calls == []


async def test_create_with_a_pasted_url(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    # Slack wraps a pasted link and escapes `&`; the subcommand and event type are case-insensitive.
    pasted = "<https://hooks.example.com/widen?a=1&amp;b=2|hooks.example.com/widen?a=1&amp;b=2>"
    reply = shown(await run(stack, http, f"CREATE Asset_Tags_Updated {pasted}"))
    (config,) = stack.dam.configurations.values()
    assert config.delivery_url == "https://hooks.example.com/widen?a=1&b=2"
    assert config.event_type == "asset_tags_updated" and config.secret_key is None
    assert config.id in reply and "not signed" in reply
    (line,) = await eventually(lambda: audit_lines(stack))
    assert "hooks.example.com" in line and "a=1" not in line  # only the host goes to the channel
    # widen-bot's shared path: the DAM is given WIDEN_WEBHOOK_SECRET to sign with, which is never shown.
    reply = shown(await run(stack, http, f"create asset_deleted <{stack.base_url}/webhooks/widen>"))
    shared = next(c for c in stack.dam.configurations.values() if c.event_type == "asset_deleted")
    assert shared.secret_key == SHARED_SECRET and "WIDEN_WEBHOOK_SECRET" in reply
    assert SHARED_SECRET not in slack_saw(stack)
    reply = shown(await run(stack, http, "create asset_created ftp://files.example.com/in"))
    assert "not an http(s) URL" in reply and len(stack.dam.configurations) == 2


async def test_create_the_dam_did_not_confirm_is_not_sent_twice_and_says_to_look(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    stack.dam.fail_next(1, 503, "/webhooks/configurations")
    reply = shown(await run(stack, http, "create asset_created"))
    assert "may have made it" in reply and "/widen list" in reply
    posts = [c for c in stack.dam.calls if c[0] == "POST"]
    assert len(posts) == 1  # a retry could have made a second configuration


class OddlyAnsweringDam(DamSandbox):
    """Makes the configuration, then answers the create late, or with something widen-bot cannot read."""

    def __init__(self, answer: web.Response | None = None, *, delay: float = 0.0) -> None:
        super().__init__()
        self.odd_answer = answer
        self.delay = delay

    async def _create_configuration(self, request: web.Request) -> web.Response:
        made = await super()._create_configuration(request)
        await asyncio.sleep(self.delay)
        return self.odd_answer or made


@pytest.mark.parametrize("answer", [
    lambda: web.Response(status=200, text="<html><body>Created</body></html>", content_type="text/html"),
    lambda: web.json_response({"status": "created"}, status=201),
    lambda: web.Response(status=204),
], ids=["html", "json-without-id", "no-content"])
async def test_a_create_the_dam_made_but_answered_oddly_keeps_taking_its_deliveries(tmp_path: Path, answer: Any):
    dam = OddlyAnsweringDam(answer())
    async with (
        running_stack(tmp_path / "widen-bot.db", dam=dam, slack_channel_rate=50.0) as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http,
    ):
        reply = shown(await run(stack, http, "create asset_created"))
        assert "may have made it" in reply and "/widen list" in reply
        (config,) = dam.configurations.values()
        event = fixture_json("events/asset_created.json") | {"webhook_configuration_id": config.id}
        path = urlsplit(config.delivery_url).path
        assert (await deliver(http, event, secret=config.secret_key, path=path)).status_code == 200
        # Settling later ties the URL to the configuration the DAM did make.
        assert await settle_pending_routes(stack.app[WIDEN], stack.app[INBOX], grace=0) == Settled(1, 0)
        assert (await stack.app[INBOX].route_of(config.id)) is not None


async def test_a_stop_while_a_create_waits_for_the_dam_keeps_its_delivery_url(tmp_path: Path):
    dam = OddlyAnsweringDam(delay=30.0)  # it has made the configuration, and takes its time to say so
    async with (
        running_stack(tmp_path / "widen-bot.db", dam=dam, slack_channel_rate=50.0) as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http,
    ):
        await slash(stack, http, "create asset_created")
        await eventually(lambda: dam.configurations)
    # The server stopped before the DAM answered; the DAM delivers to what it made.
    (config,) = dam.configurations.values()
    async with serving(tmp_path) as (_, http):
        event = fixture_json("events/asset_created.json") | {"webhook_configuration_id": config.id}
        path = urlsplit(config.delivery_url).path
        assert (await deliver(http, event, secret=config.secret_key, path=path)).status_code == 200


async def pending_route(stack: Stack) -> Route:
    (route,) = await stack.app[INBOX].pending_routes(made_before=time.time() + 1)
    return route


async def test_an_unconfirmed_create_the_dam_never_made_is_forgotten_after_a_restart(tmp_path: Path):
    database = tmp_path / "widen-bot.db"
    async with serving(tmp_path) as (stack, http):
        stack.dam.fail_next(1, 503, "/webhooks/configurations")
        await run(stack, http, "create asset_created")
        route = await pending_route(stack)
        event = fixture_json("events/asset_created.json")
        path = f"/webhooks/widen/{route.token}"
        # Meanwhile the route takes deliveries (the DAM may have made it): nothing would be lost.
        assert (await deliver(http, event, secret=route.secret, path=path)).status_code == 200
    with sqlite3.connect(database) as conn:  # as if the create had been an hour ago
        conn.execute("UPDATE routes SET created_at=created_at-3600")
    async with serving(tmp_path) as (stack, http):  # this DAM has no configuration delivering there
        await eventually(lambda: _gone(stack, route.token))
        assert (await deliver(http, event, secret=route.secret, path=path)).status_code == 404


async def _gone(stack: Stack, token: str) -> bool:
    return await stack.app[INBOX].route(token) is None


async def test_an_unconfirmed_create_the_dam_did_make_keeps_its_route_for_that_configuration(
    bot: tuple[Stack, httpx.AsyncClient],
):
    stack, http = bot
    stack.dam.fail_next(1, 503, "/webhooks/configurations")
    await run(stack, http, "create asset_created")
    route = await pending_route(stack)
    assert await settle_pending_routes(stack.app[WIDEN], stack.app[INBOX]) == Settled(0, 0)  # too early to tell
    # The DAM made it, but its answer was lost on the way.
    config = add_configuration(stack, delivery_url=f"{stack.base_url}/webhooks/widen/{route.token}",
                               secret_key=route.secret)
    assert await settle_pending_routes(stack.app[WIDEN], stack.app[INBOX], grace=0) == Settled(1, 0)
    kept = await stack.app[INBOX].route(route.token)
    assert kept is not None and kept.configuration_id == config.id and kept.secret == route.secret
    path = f"/webhooks/widen/{route.token}"
    event = fixture_json("events/asset_created.json") | {"webhook_configuration_id": config.id}
    assert (await deliver(http, event, secret=route.secret, path=path)).status_code == 200
    # Confirmed, the route takes only its own configuration's deliveries again.
    other = event | {"webhook_configuration_id": str(uuid.uuid4()), "webhook_delivery_id": str(uuid.uuid4())}
    assert (await deliver(http, other, secret=route.secret, path=path)).status_code == 422


class ShiftingDam(DamSandbox):
    """Deletes a configuration right after answering the first page of a listing, once: a delete by
    someone else while widen-bot pages through them."""

    async def _list_configurations(self, request: web.Request) -> web.Response:
        page = await super()._list_configurations(request)
        if request.query.get("offset") == "0" and not getattr(self, "shifted", False):
            self.shifted = True
            self.configurations.pop(next(iter(self.configurations)))
        return page


async def test_settling_looks_twice_before_forgetting_a_url_it_might_have_missed(tmp_path: Path):
    dam = ShiftingDam()
    async with running_stack(tmp_path / "widen-bot.db", dam=dam, slack_channel_rate=50.0) as stack:
        inbox = stack.app[INBOX]
        for _ in range(10):
            add_configuration(stack)
        await inbox.add_route("tok-made", "pending:tok-made", "secret-made", None)
        made = add_configuration(stack, delivery_url=f"{stack.base_url}/webhooks/widen/tok-made")  # on page 2
        assert await settle_pending_routes(stack.app[WIDEN], inbox, grace=0) == Settled(1, 0)
        assert (await inbox.route("tok-made")) == Route("tok-made", made.id, "secret-made")


async def test_settling_goes_on_past_a_url_it_cannot_tie(bot: tuple[Stack, httpx.AsyncClient]):
    stack, _ = bot
    inbox = stack.app[INBOX]
    # Someone pointed configuration X, which has a route of its own, at an unconfirmed URL.
    x = add_configuration(stack, delivery_url=f"{stack.base_url}/webhooks/widen/tok-a")
    await inbox.add_route("tok-x", x.id, "secret-x", None)
    await inbox.add_route("tok-a", "pending:tok-a", "secret-a", None)
    await inbox.add_route("tok-b", "pending:tok-b", "secret-b", None)
    y = add_configuration(stack, delivery_url=f"{stack.base_url}/webhooks/widen/tok-b")
    assert await settle_pending_routes(stack.app[WIDEN], inbox, grace=0) == Settled(1, 0)
    assert (await inbox.route("tok-b")) == Route("tok-b", y.id, "secret-b")
    assert (await inbox.route("tok-a")) == Route("tok-a", "pending:tok-a", "secret-a")  # left, not forgotten
    assert (await inbox.route("tok-x")) == Route("tok-x", x.id, "secret-x")


async def test_create_without_public_base_url_says_what_to_set(tmp_path: Path):
    async with serving(tmp_path, public_base_url=None) as (stack, http):
        reply = shown(await run(stack, http, "create asset_created"))
        assert "PUBLIC_BASE_URL" in reply and stack.dam.calls == []


async def test_a_ping_that_never_arrives_says_what_to_check(tmp_path: Path):
    async with serving(tmp_path, ping_timeout_seconds=1) as (stack, http):
        config = await create(stack, http)
        assert "now *off*" in shown(await run(stack, http, f"disable {config.id}"))
        sent = await slash(stack, http, f"ping {config.id}")
        assert "Ping sent" in shown(await answer(stack, sent, 1))
        missing = shown(await answer(stack, sent, 2, timeout=5))
        assert "No ping" in missing and "within 1 s" in missing
        assert "Delivery is off" in missing and "reachable" in missing and "secret" in missing


# ---- inspect, enable, disable, delete ------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_inspect_shows_the_dam_and_what_widen_bot_saw(tmp_path: Path, shape: str):
    async with serving(tmp_path, shape=shape) as (stack, http):
        config = await create(stack, http)
        sent = await slash(stack, http, f"ping {config.id}")
        await answer(stack, sent, 2)  # the round trip: one delivery received
        card = await run(stack, http, f"show <{config.id}>")  # alias, and Slack's <...> wrapping
        text = shown(card)
        for expected in ("*Event type:* `asset_created`", "*Signing:* on", "*Delivery:* on",
                         "*Deliveries received:* 1", "*Failures:* 0", "*Last ping round trip:*",
                         "widen-bot, at its own URL", "*Created by:* `5f6f1f60-1b5e-4690-8ba0-a40c09b2cf0c`"):
            assert expected in text, expected
        assert "*Last pinged:* never" not in text
        actions = buttons(card)
        assert set(actions) == {"widen_ping", "widen_disable", "widen_delete"}
        assert all(b["value"] == config.id for b in actions.values())
        assert actions["widen_delete"]["style"] == "danger" and actions["widen_delete"]["confirm"]

        other = add_configuration(stack, delivery_enabled=False, delivery_url="https://hooks.example.com/a?b=<c>")
        text = shown(await run(stack, http, f"inspect {other.id}"))
        assert "*Signing:* off" in text and "*Delivery:* off" in text and "*Deliveries received:* 0" in text
        assert "https://hooks.example.com/a?b=&lt;c&gt;" in text and "*Last delivered:* never" in text
        assert "widen_enable" in buttons(await run(stack, http, f"inspect {other.id}"))


async def test_enable_and_disable_by_command_and_by_button(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    config = add_configuration(stack)
    assert "now *off*" in shown(await run(stack, http, f"disable {config.id}"))
    assert config.delivery_enabled is False
    assert "now *on*" in shown(await answer(stack, await press(stack, http, "widen_enable", config.id)))
    assert config.delivery_enabled is True
    assert "now *off*" in shown(await answer(stack, await press(stack, http, "widen_disable", config.id)))
    assert config.delivery_enabled is False
    assert "now *on*" in shown(await run(stack, http, f"enable {config.id}"))
    assert config.delivery_enabled is True
    # Each change reads the configuration first and sends it back whole with the new flag, so a DAM
    # that treats PUT as a full replace keeps the URL and event type.
    assert [c[0] for c in stack.dam.calls] == ["GET", "PUT"] * 4
    assert config.delivery_url and config.event_type
    lines = await eventually(lambda: len(audit_lines(stack)) == 4 and audit_lines(stack))
    assert all("<@U0ADMIN>" in line and config.id in line for line in lines)
    assert "turned delivery *off*" in lines[0] and "turned delivery *on*" in lines[1]


async def test_disabling_a_configuration_the_bot_made_keeps_its_secret(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    stack.dam.put_replaces = True
    config = await create(stack, http)
    secret, url = config.secret_key, config.delivery_url
    assert secret
    assert "now *off*" in shown(await run(stack, http, f"disable {config.id}"))
    assert (config.delivery_enabled, config.secret_key, config.delivery_url) == (False, secret, url)


async def test_disabling_an_unconfirmed_create_keeps_its_secret(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    stack.dam.put_replaces = True
    stack.dam.fail_next(1, 503, "/webhooks/configurations")
    await run(stack, http, "create asset_created")
    route = await pending_route(stack)  # the DAM's answer was lost; it did make the configuration
    config = add_configuration(stack, delivery_url=f"{stack.base_url}/webhooks/widen/{route.token}",
                               secret_key=route.secret)
    assert "now *off*" in shown(await run(stack, http, f"disable {config.id}"))
    assert (config.delivery_enabled, config.secret_key) == (False, route.secret)


async def test_disabling_and_enabling_a_shared_path_configuration_keeps_it_signed(
    bot: tuple[Stack, httpx.AsyncClient],
):
    stack, http = bot
    stack.dam.put_replaces = True
    await run(stack, http, f"create asset_created <{stack.base_url}/webhooks/widen>")
    (config,) = stack.dam.configurations.values()
    assert "now *off*" in shown(await run(stack, http, f"disable {config.id}"))
    assert "now *on*" in shown(await run(stack, http, f"enable {config.id}"))
    assert (config.delivery_enabled, config.secret_key) == (True, SHARED_SECRET)
    assert "Ping sent" in shown(await run(stack, http, f"ping {config.id}"))
    await eventually(lambda: "round trip" in slack_saw(stack))  # the signed ping was taken


async def test_a_widen_bot_token_at_another_host_gets_no_secret_of_ours(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    stack.dam.put_replaces = True
    stack.dam.fail_next(1, 503, "/webhooks/configurations")
    await run(stack, http, "create asset_created")
    route = await pending_route(stack)
    elsewhere = add_configuration(stack, delivery_url=f"https://elsewhere.example.net/webhooks/widen/{route.token}")
    mine = await create(stack, http)  # confirmed, with a route of its own
    assert mine.delivery_url is not None
    copied = add_configuration(stack, delivery_url=mine.delivery_url)  # another configuration at its URL
    for config in (elsewhere, copied):
        assert "now *off*" in shown(await run(stack, http, f"disable {config.id}"))
        assert config.secret_key is None
    assert mine.secret_key  # untouched


async def test_delete_asks_first_and_only_the_button_deletes(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    config = await create(stack, http)
    token = config.delivery_url.rsplit("/", 1)[1]
    confirm = await run(stack, http, f"delete {config.id}")
    button = buttons(confirm)["widen_delete"]
    assert button["value"] == config.id and button["style"] == "danger"
    assert {"title", "text", "confirm", "deny"} <= set(button["confirm"])  # Slack's confirm dialog
    assert config.id in stack.dam.configurations
    assert not [c for c in stack.dam.calls if c[0] == "DELETE"]

    pressed = await answer(stack, await press(stack, http, "widen_delete", config.id))
    assert "Deleted" in shown(pressed) and pressed["replace_original"] is True
    assert config.id not in stack.dam.configurations
    assert await stack.app[INBOX].route(token) is None  # the bot forgot the token and the secret
    assert (await http.post(f"/webhooks/widen/{token}", json=fixture_json("events/ping.json"))).status_code == 404
    lines = await eventually(lambda: len(audit_lines(stack)) == 2 and audit_lines(stack))
    assert "deleted" in lines[1] and "<@U0ADMIN>" in lines[1]
    # Deleting again: the DAM says 404, and the answer says so plainly.
    again = shown(await answer(stack, await press(stack, http, "widen_delete", config.id)))
    assert "Not found" in again


async def test_ids_are_checked_for_shape_before_any_call(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    for text in ("inspect ../../assets/x", "ping 12345", "delete", "enable a b", "retry ../x",
                 f"disable {uuid.uuid4()}x"):
        reply = shown(await run(stack, http, text))
        assert ":warning:" in reply, text
    assert "does not look like a webhook configuration id" in shown(await run(stack, http, "ping 12345"))
    assert "Usage" in shown(await run(stack, http, "delete"))
    pressed = await answer(stack, await press(stack, http, "widen_delete", "../../assets/x"))
    assert ":warning:" in shown(pressed)
    assert stack.dam.calls == []


# ---- who may ---------------------------------------------------------------------------------------------


async def test_members_are_refused_politely_and_nothing_reaches_the_dam(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    config = add_configuration(stack)
    for text in ("list", f"inspect {config.id}", "create asset_created", f"ping {config.id}",
                 f"disable {config.id}", f"delete {config.id}", "status", "retry all"):
        reply = shown(await run(stack, http, text, user=MEMBER))
        assert "Sorry" in reply and "admins" in reply, text
    for action in ("widen_ping", "widen_enable", "widen_disable", "widen_delete"):
        assert "Sorry" in shown(await answer(stack, await press(stack, http, action, config.id, user=MEMBER)))
    assert stack.dam.calls == []
    assert config.id in stack.dam.configurations and config.delivery_enabled
    assert ("users.info", "ok") in stack.slack.calls
    assert not audit_lines(stack)
    # A workspace admin is allowed.
    assert config.id in shown(await run(stack, http, "list", user=ADMIN))


async def test_when_slack_cannot_say_who_is_admin_the_answer_is_no(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    stack.slack.fail_next("users.info", 1, status=503)
    sent = await slash(stack, http, "list")
    assert sent.response.status_code == 200 and sent.seconds < 2.5
    assert "could not check your Slack role" in shown(await answer(stack, sent))
    assert stack.dam.calls == []
    assert "webhook configurations" in shown(await run(stack, http, "list"))  # the next try works


async def test_admin_user_ids_decide_alone_when_set(tmp_path: Path):
    async with serving(tmp_path, admin_user_ids="U0SOMEONE, U0MEMBER") as (stack, http):
        assert "webhook configurations" in shown(await run(stack, http, "list", user=MEMBER))
        assert "Sorry" in shown(await run(stack, http, "list", user=ADMIN))  # a workspace admin, not listed
        assert len(stack.dam.calls) == 1
        assert not [c for c in stack.slack.calls if c[0] == "users.info"]


# ---- Slack's signature and the 3-second rule ---------------------------------------------------------------


async def test_a_bad_signature_or_a_stale_timestamp_is_refused(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    wrong = await slash(stack, http, "list", secret="not-the-signing-secret")
    stale = await slash(stack, http, "list", timestamp=int(time.time()) - 600)
    unsigned = await http.post("/slack/events", content="command=%2Fwiden&text=list&user_id=U0ADMIN",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert [wrong.response.status_code, stale.response.status_code, unsigned.status_code] == [401, 401, 401]
    assert stack.dam.calls == [] and not answers(stack, wrong) and not answers(stack, stale)


async def test_a_slow_dam_never_makes_slack_wait(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    config = add_configuration(stack)
    stack.dam.latency = 4.0
    listed = await slash(stack, http, "list")
    pressed = await press(stack, http, "widen_disable", config.id)
    for sent in (listed, pressed):
        assert sent.response.status_code == 200 and sent.seconds < 1.5
        assert not answers(stack, sent)  # acknowledged now, answered later
    assert config.id in shown(await answer(stack, listed, timeout=15))
    assert "now *off*" in shown(await answer(stack, pressed, timeout=15))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, ["Not authorized", "WIDEN_API_TOKEN"]),
        (429, ["Rate limited", "Try again in 1 s"]),
        (503, ["unavailable", "(503)"]),
    ],
)
async def test_dam_errors_become_plain_answers(tmp_path: Path, status: int, expected: list[str]):
    async with serving(tmp_path) as (stack, http):
        config = add_configuration(stack)
        stack.dam.fail_next(5, status, "/webhooks/configurations", reset_after=0.2)  # outlasts the retries
        reply = shown(await run(stack, http, f"inspect {config.id}"))
        for phrase in expected:
            assert phrase in reply, (phrase, reply)
        assert "Traceback" not in reply and "injected" not in reply


async def test_an_unknown_configuration_is_not_found(bot: tuple[Stack, httpx.AsyncClient]):
    stack, http = bot
    missing = str(uuid.uuid4())
    for text in (f"inspect {missing}", f"ping {missing}", f"enable {missing}", f"delete {missing}"):
        reply = shown(await run(stack, http, text))
        assert "Not found" in reply and missing in reply, text


# ---- dead letters ----------------------------------------------------------------------------------------


async def test_status_shows_parked_deliveries_and_retry_puts_them_back(tmp_path: Path):
    async with serving(tmp_path, max_attempts=1) as (stack, http):
        stack.dam.token = "revoked"  # the worker's asset fetch is refused: with MAX_ATTEMPTS=1 it parks
        event = fixture_json("events/asset_created.json")
        event.update(webhook_delivery_id=str(uuid.uuid4()), asset_id=SEED_ASSET)
        assert (await deliver(http, event)).status_code == 200
        await eventually(lambda: _parked(stack))

        status = shown(await run(stack, http, "status"))
        assert "*Parked:* 1" in status and event["webhook_delivery_id"] in status
        assert "WIDEN_API_TOKEN" in status and "retry all" in status

        assert "Nothing to retry" in shown(await run(stack, http, f"retry {uuid.uuid4()}"))
        stack.dam.token = "sandbox-dam-token"
        assert "back in the queue" in shown(await run(stack, http, f"retry {event['webhook_delivery_id']}"))
        await eventually(lambda: any("spring-campaign-hero" in shown(m) for m in stack.slack.messages_in(CHANNEL)))
        assert "*Parked:* 0" in shown(await run(stack, http, "status"))
        assert "Nothing to retry" in shown(await run(stack, http, "retry all"))
        await eventually(lambda: any("put parked delivery" in line for line in audit_lines(stack)))


async def _parked(stack: Stack) -> bool:
    return (await stack.app[INBOX].stats()).parked == 1


async def test_retry_all(tmp_path: Path):
    async with serving(tmp_path, max_attempts=1) as (stack, http):
        stack.dam.token = "revoked"
        for _ in range(2):
            event = fixture_json("events/asset_created.json")
            event.update(webhook_delivery_id=str(uuid.uuid4()), asset_id=SEED_ASSET)
            await deliver(http, event)
        await eventually(lambda: _count_parked(stack, 2))
        stack.dam.token = "sandbox-dam-token"
        assert "Put 2 parked deliveries back" in shown(await run(stack, http, "retry all"))
        await eventually(lambda: _count_parked(stack, 0))


async def test_retry_all_puts_back_a_big_dead_letter_pile_whole(tmp_path: Path):
    async with serving(tmp_path, max_attempts=1) as (stack, http):
        stack.dam.token = "revoked"  # nothing gets through: all stay parked until retried
        with sqlite3.connect(tmp_path / "widen-bot.db") as conn:  # 1,234 deliveries that were parked
            conn.executemany(
                "INSERT INTO deliveries (dedup_key, delivery_id, configuration_id, event_type, body, received_at, "
                "state) VALUES (?, ?, 'cfg', 'asset_created', x'7b7d', ?, 'parked')",
                [(f"id:{n}", str(n), time.time()) for n in range(1234)])
        assert "Put 1234 parked deliveries back" in shown(await run(stack, http, "retry all"))
        assert (await stack.app[INBOX].stats()).parked < 1234


async def _count_parked(stack: Stack, count: int) -> bool:
    return (await stack.app[INBOX].stats()).parked == count


# ---- Socket Mode ---------------------------------------------------------------------------------------------


async def test_an_app_token_switches_to_socket_mode(tmp_path: Path):
    async with serving(tmp_path, slack_app_token="xapp-1-A0WIDENBOT-1-sandbox") as (stack, http):
        # No public Slack endpoint: /slack/events is not mounted, even with a valid signature.
        sent = await slash(stack, http, "help")
        assert sent.response.status_code == 404
        assert isinstance(stack.app[SOCKET_MODE], AsyncSocketModeHandler)
        # It tries to open the websocket with the app-level token (the local Slack has no Socket Mode).
        # The local Slack knows only the bot token: "invalid_auth" shows the app-level token was used.
        await eventually(lambda: ("apps.connections.open", "invalid_auth") in stack.slack.calls)
        assert (await http.get("/healthz")).status_code == 200  # deliveries are served meanwhile


# ---- the sandbox ---------------------------------------------------------------------------------------------


async def test_the_sandbox_drives_widen_commands_and_exits_0_with_once():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "receiver.cli", "sandbox", "--once", "--uploads", "1",
        cwd=Path(__file__).resolve().parents[1], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 0, text
    for seen in ("types: /widen create asset_created", "Created webhook configuration", "types: /widen ping",
                 "Ping sent", "round trip", "types: /widen list", "1 webhook configuration", "Ping received"):
        assert seen in text, seen
