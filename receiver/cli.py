"""`widen-bot serve | sandbox | check | bench`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from receiver.settings import Settings


def load_settings(**overrides: object) -> Settings:
    """Settings, or exit 2 with one line per problem naming the variable (no traceback)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            print(f"{name}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(_: argparse.Namespace) -> int:
    from aiohttp import web

    from receiver import logs
    from receiver.app import build_app

    settings = load_settings()
    problems = settings.problems_for_serve()
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    _use_uvloop()
    web.run_app(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout,
        access_log=None,
        print=None,
        handle_signals=True,
    )
    return 0


def sandbox(args: argparse.Namespace) -> int:
    from receiver.sandbox_run import run_sandbox

    return asyncio.run(run_sandbox(once=args.once, uploads=args.uploads))


def check(_: argparse.Namespace) -> int:
    from receiver.check import run_checks

    settings = load_settings()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="widen-bot", description="Acquia DAM webhooks to Slack.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the server").set_defaults(run=serve)
    sb = commands.add_parser("sandbox", help="the whole flow with a local DAM and a local Slack")
    sb.add_argument("--once", action="store_true", help="exit 0 when the flow is done")
    sb.add_argument("--uploads", type=int, default=5, help="sample assets to upload (default 5)")
    sb.set_defaults(run=sandbox)
    commands.add_parser("check", help="validate settings, reach Slack and the DAM").set_defaults(run=check)
    bp = commands.add_parser("bench", help="benchmarks (print key=value figures)")
    which = bp.add_subparsers(dest="which", required=True)
    ingest = which.add_parser("ingest", help="acknowledged deliveries/s against a bare aiohttp handler")
    ingest.add_argument("--seconds", type=float, default=5.0)
    ingest.add_argument("--connections", type=int, default=32)
    burst = which.add_parser("burst", help="N uploads through the local DAM and Slack, each delivered twice")
    burst.add_argument("--events", type=int, default=1000)
    bp.set_defaults(run=bench)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
