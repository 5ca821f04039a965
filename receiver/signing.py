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
    try:
        given = bytes.fromhex(candidate)
    except ValueError:  # not hex (or not ASCII): cannot match
        return False
    return hmac.compare_digest(hmac.digest(secret.encode(), body, "sha256"), given)
