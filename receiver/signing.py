"""Verifying a delivery: HMAC-SHA256 of the raw body, hex, optionally prefixed `sha256=`."""

from __future__ import annotations

import hashlib
import hmac


def sign(body: bytes, secret: str) -> str:
    """The header value the DAM (and the local DAM) sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header_value: str | None) -> bool:
    """Constant-time check of a signature header against the body."""
    if not header_value:
        return False
    candidate = header_value.strip()
    if candidate[:7].lower() == "sha256=":
        candidate = candidate[7:]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # compare_digest needs ASCII on both sides; a non-ASCII header simply fails.
    try:
        return hmac.compare_digest(expected, candidate.lower())
    except TypeError:
        return False
