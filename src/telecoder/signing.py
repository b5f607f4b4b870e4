"""Webhook signatures: Standard Webhooks (sign and verify) and a plain HMAC-SHA256 of the body.

Standard Webhooks (standardwebhooks.com): the headers ``webhook-id``, ``webhook-timestamp``
(seconds) and ``webhook-signature`` (space-separated ``v1,<base64 HMAC-SHA256>``) over
``{id}.{timestamp}.{body}``, keyed with the secret's bytes (``whsec_<base64>``). A timestamp
more than ``tolerance`` seconds away from now is refused, so a captured request cannot be
replayed later. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from telecoder.errors import BadInput, WebhookSignatureInvalid

PREFIX = "whsec_"
TOLERANCE = 300.0


def secret_bytes(secret: str) -> bytes:
    """The key of a Standard Webhooks secret (``whsec_`` and base64)."""
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("a Standard Webhooks secret is whsec_ followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of a message: ``v1,<base64>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for sending ``body``."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify_standard(
    secret: str,
    found: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a Standard Webhooks request; returns its ``webhook-id``.

    ``found``: the request's headers, looked up in lower case.
    """
    msg_id = found.get("webhook-id")
    stamp = found.get("webhook-timestamp")
    given = found.get("webhook-signature")
    if not msg_id or not stamp or not given:
        raise WebhookSignatureInvalid(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookSignatureInvalid("webhook-timestamp is not a number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureInvalid(
            f"webhook-timestamp is more than {tolerance:g} s from now: refused as a replay"
        )
    expected = sign(secret, msg_id, timestamp, body).encode()
    for candidate in given.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return msg_id
    raise WebhookSignatureInvalid("the webhook-signature does not match the body")


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_hmac(secret: str, given: str | None, body: bytes, *, header: str) -> None:
    """Check a hex HMAC-SHA256 of the body, with or without a ``sha256=`` prefix."""
    if not given:
        raise WebhookSignatureInvalid(f"missing the {header} header")
    value = given.strip().removeprefix("sha256=")
    if not hmac.compare_digest(value.lower().encode(), hmac_hex(secret, body).encode()):
        raise WebhookSignatureInvalid(f"the {header} signature does not match the body")
