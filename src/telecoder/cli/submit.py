"""``telecoder run --detach --server URL``: the submission in one HTTP request, with the
standard library alone.

The full client (``client.py``) imports httpx, whose import alone costs more than this whole
command should take; queueing a task needs one ``POST /api/sessions``. When the URL carries
credentials or a proxy is configured in the environment (which httpx honours), this declines
(``None``) and the command takes the full client.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from telecoder import __version__
from telecoder.apierrors import error_for
from telecoder.errors import BadInput, ServerUnavailable
from telecoder.urls import is_url

CONNECT_SECONDS = 5.0
REQUEST_SECONDS = 30.0
_PROXIES = ("http_proxy", "https_proxy", "all_proxy")


def absolute(repo: str) -> str:
    """A URL as given; a path made absolute here (the server resolves it on its machine)."""
    if is_url(repo):
        return repo
    return str(Path(repo).expanduser().absolute())


def session_body(
    *,
    prompt: str,
    repo: str,
    engine: str | None,
    model: str | None,
    base: str | None,
    forge: str | None,
    priority: int,
    timeout: float | None,
    mode: str | None = None,
    tier: str | None = None,
    budget_usd: float | None = None,
    notify: list[str] | None = None,
    steps: list[str] | None = None,
) -> dict[str, Any]:
    """The ``POST /api/sessions`` body of ``telecoder run``'s options (unset ones left out)."""
    body: dict[str, Any] = {
        "notify": notify or None,
        "steps": steps or None,
        "budget_usd": budget_usd,
        "repo": absolute(repo),
        "prompt": prompt or None,
        "engine": engine,
        "model": model,
        "base": base,
        "forge": forge,
        "priority": priority,
        "timeout_seconds": timeout,
        "mode": mode,
        "tier": tier,
    }
    return {k: v for k, v in body.items() if v is not None}


def create(server: str, body: dict[str, Any], *, token: str | None) -> dict[str, Any] | None:
    """Queue a task on ``server``: the session as the API answers it (with ``warnings``), or
    None when this request needs the full client."""
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"the server must be an http:// or https:// URL, not {server!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXIES):
        return None
    import http.client  # here: only a submission that takes this path needs it

    try:
        port = parts.port
    except ValueError:
        raise BadInput(f"the server's port is not a number: {server!r}") from None
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, port, timeout=CONNECT_SECONDS)
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=CONNECT_SECONDS)
    headers = {
        "user-agent": f"telecoder/{__version__}",
        "accept": "application/json",
        "content-type": "application/json",
    }
    if token:
        headers["authorization"] = f"Bearer {token}"
    payload = json.dumps(body, ensure_ascii=False).encode()
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(REQUEST_SECONDS)
        connection.request("POST", parts.path.rstrip("/") + "/api/sessions", payload, headers)
        response = connection.getresponse()
        raw = response.read()
    except TimeoutError:
        raise ServerUnavailable(f"the server at {shown} did not answer") from None
    except (OSError, http.client.HTTPException) as e:
        reason = str(e) or type(e).__name__
        raise ServerUnavailable(f"cannot reach the server at {shown}: {reason}") from None
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    error = error_for(
        response.status,
        answer,
        reason=response.reason,
        retry_after=response.getheader("retry-after"),
    )
    if error is not None:
        raise error
    if not isinstance(answer, dict):
        raise ServerUnavailable(
            f"{shown} answered {response.status} without JSON: is it a TeleCoder server?"
        )
    return answer
