"""`widen-bot check`: one line per check, non-zero exit naming what failed.

It runs where `serve` will run (the container, the same env file), so it proves the settings, the store's
volume and both tokens before the server is started or the DAM is pointed at it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.inbox import SCHEMA
from receiver.settings import Settings
from widen.client import Unauthorized, WidenClient, WidenError

TIMEOUT = 10  # seconds per network check


def _ok(name: str, detail: str = "") -> None:
    print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)


def _fail(name: str, detail: str) -> None:
    print(f"FAIL  {name}: {detail}", flush=True)


def _note(name: str, detail: str) -> None:
    print(f"note  {name}: {detail}", flush=True)


def _skip(name: str, detail: str) -> None:
    print(f"skip  {name}: {detail}", flush=True)


def check_settings(settings: Settings) -> bool:
    problems = settings.problems_for_serve()
    for line in problems:
        _fail("settings", line)
    if not problems:
        _ok("settings")
        if settings.public_base_url is None:
            _note("settings", "PUBLIC_BASE_URL is not set: /widen create then needs a delivery URL")
    return not problems


def check_store(settings: Settings) -> bool:
    """The store's directory exists (or can be made) and this user may write there, and a store already
    there is an SQLite database; nothing is created."""
    try:
        path = settings.database_path.resolve()  # as serve opens it: through any symlink
        existing = next(p for p in (path, *path.parents) if p.exists())
    except (OSError, RuntimeError) as exc:  # a directory this user may not search, a symlink loop
        _fail("store", f"{settings.database_path} cannot be reached ({exc}): check DATABASE_URL and the volume")
        return False
    if existing == path:
        # Its WAL and shared-memory files too, when a crash left them (made by root, say, they stop serve).
        sides = [side for side in (Path(f"{path}-wal"), Path(f"{path}-shm")) if side.exists()]
        ok = path.is_file() and all(os.access(p, os.R_OK | os.W_OK) for p in (path, *sides)) \
            and os.access(path.parent, os.W_OK)
        why = "is not a file writable by this user (with its -wal and -shm files)"
    else:
        ok = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        why = "is not a directory writable by this user"
    if not ok:
        _fail("store", f"{existing} {why}: check DATABASE_URL and the volume")
        return False
    if existing == path and (problem := _not_a_store(path)):
        _fail("store", f"{path} {problem}: check DATABASE_URL")
        return False
    _ok("store", f"{path} is writable" if existing == path else f"{path} can be created")
    return True


def _not_a_store(path: Path) -> str | None:
    """Why the file cannot be the inbox (serve would fail at start), or None. Read as immutable, so that
    nothing is created or changed: no -wal or -shm file, no checkpoint of a WAL left by a crash."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)) as conn:
            found = _columns(conn)
    except sqlite3.DatabaseError as exc:  # "file is not a database", a damaged header, ...
        return f"is not a usable SQLite database ({exc})"
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(SCHEMA)
        ours = _columns(conn)
    if found and not found.keys() & ours.keys():
        return "is another program's SQLite database, not widen-bot's inbox"
    for table, columns in ours.items():
        if table in found and not found[table] >= columns:
            missing = ", ".join(sorted(columns - found[table]))
            return f"has a table {table} that is not widen-bot's (no column {missing})"
    return None


def _columns(conn: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {table: {name for (name,) in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}
            for table in tables if not table.startswith("sqlite_")}


# Each check answers True (ok), False (failed) or None (skipped: its setting is missing, which the
# settings check already reports as the failure).


async def check_slack(settings: Settings) -> bool | None:
    if settings.slack_bot_token is None:
        _skip("slack", "SLACK_BOT_TOKEN is not set")
        return None
    slack = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=str(settings.slack_api_url),
                           timeout=TIMEOUT, retry_handlers=[])
    try:
        auth = await slack.auth_test()
    except SlackApiError as exc:
        data = exc.response.data if isinstance(exc.response.data, dict) else {}
        error = data.get("error") or f"HTTP {exc.response.status_code}"
        _fail("slack", f"auth.test answered {error}: check SLACK_BOT_TOKEN and SLACK_API_URL")
        return False
    except Exception as exc:  # every kind of network failure: name it, no traceback
        _fail("slack", f"cannot reach {settings.slack_api_url} ({type(exc).__name__}): check SLACK_API_URL")
        return False
    _ok("slack", f"auth.test as {auth.get('user_id')} in team {auth.get('team_id')}")
    return True


async def check_dam(settings: Settings) -> bool | None:
    if settings.widen_api_token is None:
        _skip("dam", "WIDEN_API_TOKEN is not set")
        return None
    async with WidenClient(str(settings.widen_api_url), settings.widen_api_token, timeout=TIMEOUT,
                           max_attempts=2, max_wait=2) as widen:
        try:
            await widen.check()
        except Unauthorized:
            _fail("dam", "the DAM refused WIDEN_API_TOKEN")
            return False
        except WidenError as exc:  # the client's messages never carry the token
            _fail("dam", f"{exc}: check WIDEN_API_URL")
            return False
    _ok("dam", f"{settings.widen_api_url} accepts WIDEN_API_TOKEN")
    return True


async def run_checks(settings: Settings) -> int:
    results = {
        "settings": check_settings(settings),
        "store": check_store(settings),
        "slack": await check_slack(settings),
        "dam": await check_dam(settings),
    }
    failed = [name for name, ok in results.items() if ok is False]
    if failed:
        print(f"check failed: {', '.join(failed)}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0

