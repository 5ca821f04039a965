"""Logging: text or one JSON object per line, with every secret scrubbed from every line.

Scrubbing happens in the formatter, after the message, its arguments and any traceback are rendered,
so a secret cannot slip through a library's debug output or an exception message either. Uncaught
exceptions and warnings are routed through logging too, so they are scrubbed and, in JSON mode, stay
one object per line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# Token shapes worth hiding even if we were never told the value (Slack tokens, bearer headers).
TOKEN_PATTERNS = re.compile(r"xox[a-z]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|(?i:bearer)\s+[^\s'\",}\\]+")
# Slack request bodies carry a response URL that can post for 30 minutes, and Bolt logs the whole body
# of a request whose signature it refuses; so do the Slack hooks URLs themselves.
SLACK_BODIES = re.compile(r"(?<=body: ).*|https://hooks\.slack\.com/\S+|(?<=response_url=)[^&\s]+")
CONTEXT_FIELDS = ("delivery_id", "configuration_id", "asset_id")
# Below this length a "secret" would redact ordinary words; no real token is this short.
MIN_SECRET_LENGTH = 6


class _Secrets:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        # The forms a value takes in a URL, a form body or a JSON string, as well as itself.
        forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
                 json.dumps(value, ensure_ascii=False)[1:-1]}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            # One alternation, longest first, so a secret containing another is hidden whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return SLACK_BODIES.sub(REDACTED, TOKEN_PATTERNS.sub(REDACTED, text))


SECRETS = _Secrets()


def register_secret(value: str | None) -> None:
    """Never let this value reach a log line (settings secrets, generated secret keys)."""
    SECRETS.add(value)


def scrub(text: str) -> str:
    """The text with every registered secret and every token-shaped string redacted."""
    return SECRETS.scrub(text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None))
        return SECRETS.scrub(f"{line} {ids}" if ids else line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Scrub each value before encoding: a secret with a quote or backslash would otherwise be
        # escaped by json.dumps and no longer match, and a redaction must never break the JSON.
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": SECRETS.scrub(record.getMessage()),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = SECRETS.scrub(str(value))
        if record.exc_info:
            entry["exception"] = SECRETS.scrub(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = SECRETS.scrub(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per HTTP request (ours and the libraries'): wanted at DEBUG, noise above it.
    chatty = logging.DEBUG if logging.getLevelName(level) <= logging.DEBUG else logging.WARNING
    for name in ("aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(chatty)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("widen-bot").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):  # as the default hook does
        return
    logging.getLogger("widen-bot").critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
