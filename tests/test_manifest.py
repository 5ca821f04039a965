"""manifest.yml: valid against Slack's manifest schema, and declaring what the code really uses."""

from __future__ import annotations

import functools
import inspect
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from slack_sdk.web.async_base_client import AsyncBaseClient
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import COMMAND, SLACK_EVENTS_PATH
from bot.commands import HANDLED
from bot.scopes import COMMAND_SCOPES, METHOD_SCOPES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "fixtures" / "slack-app-manifest.schema.json"
# The local Slack implements Web API methods rather than calling them, and bot/scopes.py declares them:
# neither is a use.
NOT_THE_BOT = {ROOT / "bot" / "sandbox.py", ROOT / "bot" / "scopes.py"}


def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def source_files() -> list[Path]:
    files = [p for package in ("widen", "receiver", "bot") for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if p not in NOT_THE_BOT]


def web_api_methods() -> dict[str, str]:
    """Every Web API method slack_sdk knows, as {"chat.postMessage": "chat_postMessage", ...}."""
    base = set(dir(AsyncBaseClient))
    names = [n for n, f in inspect.getmembers(AsyncWebClient, inspect.iscoroutinefunction)
             if not n.startswith("_") and n not in base]
    return {name.replace("_", "."): name for name in names}


@functools.cache
def methods_called_by_the_code() -> frozenset[str]:
    """Web API methods named in the code: `client.users_info(...)` or `api_call("conversations.history")`."""
    known = web_api_methods()
    found = set()
    for path in source_files():
        text = path.read_text()
        called = set(re.findall(r"\.(\w+)\(", text))
        quoted = set(re.findall(r"[\"']([a-z]+(?:\.[A-Za-z]+)+)[\"']", text))
        found |= {dotted for dotted, snake in known.items() if snake in called or dotted in quoted}
    return frozenset(found)


def test_manifest_is_valid_against_slacks_schema():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest()), key=str)
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_scanner_sees_the_calls_we_know_of():
    found = methods_called_by_the_code()
    assert {"chat.postMessage", "users.info", "conversations.history", "auth.test"} <= found


def test_every_web_api_method_the_code_calls_has_its_scopes_listed():
    unlisted = methods_called_by_the_code() - set(METHOD_SCOPES)
    assert not unlisted, f"add these to bot.scopes.METHOD_SCOPES with their scopes: {sorted(unlisted)}"


def test_the_manifest_declares_exactly_the_scopes_the_code_needs():
    needed = {scope for method in methods_called_by_the_code() for scope in METHOD_SCOPES[method]}
    needed |= set(COMMAND_SCOPES)
    declared = set(manifest()["oauth_config"]["scopes"]["bot"])
    assert needed <= declared, f"missing from manifest.yml: {sorted(needed - declared)}"
    assert declared <= needed, f"declared but never used: {sorted(declared - needed)}"
    assert "user" not in manifest()["oauth_config"]["scopes"]


def test_the_slash_command_and_its_usage_hint_match_the_code():
    app_source = (ROOT / "bot" / "app.py").read_text()
    registered = set(re.findall(r"\.command\((\w+)", app_source))
    assert registered == {"COMMAND"}
    commands = manifest()["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [COMMAND]
    hint = commands[0]["usage_hint"]
    for subcommand in HANDLED:
        assert re.search(rf"\b{subcommand}\b", hint), subcommand


def test_interactivity_and_request_urls_point_at_the_slack_events_path():
    data = manifest()
    assert ".action(" in (ROOT / "bot" / "app.py").read_text()  # the code has buttons...
    assert data["settings"]["interactivity"]["is_enabled"] is True  # ...so Slack must send their presses
    urls = [data["settings"]["interactivity"]["request_url"], data["features"]["slash_commands"][0]["url"]]
    for url in urls:
        assert url.startswith("https://") and url.endswith(SLACK_EVENTS_PATH), url
    # HTTP mode as shipped; the comments explain the switch to Socket Mode.
    assert data["settings"]["socket_mode_enabled"] is False
    text = (ROOT / "manifest.yml").read_text()
    assert "socket_mode_enabled" in text and "SLACK_APP_TOKEN" in text and "connections:write" in text
    assert data["features"]["bot_user"]["display_name"]
