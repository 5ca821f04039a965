"""`widen-bot serve | sandbox | check | bench`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sqlite3
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from receiver.settings import Settings

HTTP_DRAIN_SECONDS = 5.0


def read_settings(*, for_serve: bool = False) -> tuple[Settings | None, list[str]]:
    """The settings (None if some value is invalid) and one line per problem, naming the variable.

    `for_serve` also reports what serve needs and lacks, in the same list as the invalid values, so
    one run shows every problem.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        invalid = {_variable(error["loc"]): _reason(error["msg"]) for error in exc.errors()}
        lines = [f"{name}: {reason}" for name, reason in invalid.items()]
        if for_serve:
            lines += [line for line in _missing_for_serve(set(invalid)) if line.split(":")[0] not in invalid]
        return None, lines
    return settings, settings.problems_for_serve() if for_serve else []


def load_settings(*, for_serve: bool = False) -> Settings:
    """Settings, or exit 2 with one line per problem (no traceback)."""
    settings, problems = read_settings(for_serve=for_serve)
    if settings is None or problems:
        for line in problems:
            print(line, file=sys.stderr)
        raise SystemExit(2)
    return settings


def _variable(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]).upper() if loc else "settings"


def _reason(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _missing_for_serve(invalid: set[str]) -> list[str]:
    """What serve lacks besides the invalid values (those read as their defaults here)."""
    defaults = {
        name.upper(): field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
        if name.upper() in invalid
    }
    try:
        return Settings(**{k.lower(): v for k, v in defaults.items()}).problems_for_serve()
    except ValidationError:
        return []


def serve(_: argparse.Namespace) -> int:
    from aiohttp import web

    from receiver import logs
    from receiver.app import build_app

    settings = load_settings(for_serve=True)
    logs.configure(settings.log_level, settings.log_format)
    _use_uvloop()
    app = build_app(settings)
    log = logging.getLogger("widen-bot")

    async def say_ready(_: web.Application) -> None:
        log.info("widen-bot listening on http://%s:%s; Slack: %s; store: %s; shared webhook path: %s",
                 settings.host, settings.port, "Socket Mode" if settings.socket_mode else "HTTP, /slack/events",
                 settings.database_path.resolve(), _shared_path(settings))

    app.on_startup.append(say_ready)
    # Everything imported and built so far lives as long as the process: keep the collector from
    # walking it again and again while requests come in.
    gc.freeze()
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            # On SIGTERM: stop listening, give requests being answered this long (deliveries are stored
            # in milliseconds, Slack commands acknowledged within 3 s), then the worker gets its own
            # SHUTDOWN_TIMEOUT to finish or release in-flight deliveries, then the store is checkpointed.
            shutdown_timeout=min(settings.shutdown_timeout, HTTP_DRAIN_SECONDS),
            access_log=None,
            print=None,
            handle_signals=True,
        )
    except (OSError, sqlite3.Error) as exc:  # port taken, store unreachable: one line, not a traceback
        log.critical("cannot start: %s (HOST, PORT, DATABASE_URL)", exc)
        return 1
    log.info("widen-bot stopped")
    return 0


def _shared_path(settings: Settings) -> str:
    if settings.widen_webhook_secret is not None:
        return "open to deliveries signed with WIDEN_WEBHOOK_SECRET"
    if settings.widen_allow_unsigned:
        return "open to unsigned deliveries (WIDEN_ALLOW_UNSIGNED)"
    return "closed (no WIDEN_WEBHOOK_SECRET)"


def sandbox(args: argparse.Namespace) -> int:
    from receiver.sandbox_run import run_sandbox

    return asyncio.run(run_sandbox(once=args.once, uploads=args.uploads))


def check(_: argparse.Namespace) -> int:
    from receiver import logs
    from receiver.check import run_checks

    settings, problems = read_settings(for_serve=True)
    if settings is None:  # the other checks need valid settings: name every problem, fail like they do
        for line in problems:
            print(f"FAIL  settings: {line}", flush=True)
        print("check failed: settings", flush=True)
        return 1
    # A command for people: text logs, still through the scrubbing formatter.
    logs.configure(settings.log_level, "text")
    return asyncio.run(run_checks(settings))


def bench(args: argparse.Namespace) -> int:
    from receiver import bench as benchmarks

    _use_uvloop()
    if args.which == "ingest":
        return asyncio.run(benchmarks.ingest(seconds=args.seconds, connections=args.connections))
    return asyncio.run(benchmarks.burst(events=args.events))


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="widen-bot", description="Acquia DAM webhooks to Slack.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the server").set_defaults(run=serve)
    sb = commands.add_parser("sandbox", help="the whole flow with a local DAM and a local Slack")
    sb.add_argument("--once", action="store_true", help="exit 0 when the flow is done")
    sb.add_argument("--uploads", type=_count, default=6,
                    help="sample assets to upload (default 6: one of each sample; over 10 make a digest)")
    sb.set_defaults(run=sandbox)
    commands.add_parser("check", help="validate settings, reach Slack and the DAM").set_defaults(run=check)
    bp = commands.add_parser("bench", help="benchmarks (print key=value figures)")
    which = bp.add_subparsers(dest="which", required=True)
    ingest = which.add_parser("ingest", help="acknowledged deliveries/s against a bare aiohttp handler")
    ingest.add_argument("--seconds", type=float, default=5.0, help="per round; two rounds each (default 5)")
    ingest.add_argument("--connections", type=_count, default=32, help="keep-alive connections (default 32)")
    burst = which.add_parser("burst", help="N uploads through the local DAM and Slack, each delivered twice")
    burst.add_argument("--events", type=_count, default=1000, help="uploads (default 1000)")
    bp.set_defaults(run=bench)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
