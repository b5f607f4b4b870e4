"""What an error answer of TeleCoder's HTTP API stands for, as the errors the CLI reports.

    422, 413, 400   BadInput            404   ``missing`` (SessionNotFound by default)
    409             Conflict (LeaseLost: an ``error`` code ``lease_lost``)
    401, 403        Unauthorized        429, 5xx   ServerUnavailable

Pure: both the full client (``client.py``, httpx) and the lean submit (``submit.py``,
the standard library) map answers through it.
"""

from __future__ import annotations

from telecoder.errors import (
    BadInput,
    Conflict,
    LeaseLost,
    ServerUnavailable,
    SessionNotFound,
    TeleCoderError,
    Unauthorized,
)

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of the quick submit
if TYPE_CHECKING:
    from typing import Any


def error_for(
    status: int,
    body: Any,
    *,
    reason: str = "",
    retry_after: str | None = None,
    missing: type[TeleCoderError] = SessionNotFound,
) -> TeleCoderError | None:
    """The error an answer with this status and (decoded JSON, or None) body stands for; None
    for a success."""
    if status < 400:
        return None
    detail = ""
    if isinstance(body, dict):
        detail = " ".join(str(body.get("detail") or "").split())
    detail = detail or reason or f"HTTP {status}"
    if status in (400, 413, 422):
        return BadInput(detail)
    if status == 404:
        return missing(detail)
    if status == 409:
        code = body.get("error") if isinstance(body, dict) else None
        return LeaseLost(detail) if code == "lease_lost" else Conflict(detail)
    if status in (401, 403):
        return Unauthorized(f"the server refused the request: {detail}")
    if status == 429:
        return ServerUnavailable(f"{detail} (try again in {retry_after or 'a while'} s)")
    if status >= 500:
        return ServerUnavailable(f"the server failed (HTTP {status}): {detail}")
    return TeleCoderError(f"the server answered HTTP {status}: {detail}")
