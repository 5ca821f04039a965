"""Logging: text or one JSON object per line, with every secret scrubbed from every line.

Scrubbing happens in the formatter, after the message, its arguments and any traceback are rendered,
so a secret cannot slip through a library's debug output or an exception message either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# Token shapes worth hiding even if we were never told the value (Slack tokens, bearer headers).
TOKEN_PATTERNS = re.compile(r"xox[a-z]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|(?i:bearer)\s+[^\s'\",}]+")
CONTEXT_FIELDS = ("delivery_id", "configuration_id", "asset_id")


class _Secrets:
    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= 6:
            self.values.add(value)

    def scrub(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, "[redacted]")
        return TOKEN_PATTERNS.sub("[redacted]", text)


SECRETS = _Secrets()


def register_secret(value: str | None) -> None:
    """Never let this value reach a log line (settings secrets, generated secret keys)."""
    SECRETS.add(value)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None))
        return SECRETS.scrub(f"{line} {ids}" if ids else line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return SECRETS.scrub(json.dumps(entry, default=str))


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per delivery: useful at DEBUG only.
    logging.getLogger("aiohttp.access").setLevel(max(logging.getLevelName(level), logging.WARNING))
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
