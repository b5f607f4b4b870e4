"""``telecoder run --detach --server URL``: the submission in one HTTP request, with the
standard library alone.

The full client (``client.py``) imports httpx, whose import alone costs more than this whole
command should take; queueing a task needs one ``POST /api/sessions``. Over plain http it is
written on a socket (``http.client`` imports the email parser and ssl: ~15 ms); https takes
``http.client``. When the URL carries
credentials or a proxy is configured in the environment (which httpx honours), this declines
(``None``) and the command takes the full client.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

from telecoder import __version__
from telecoder.apierrors import error_for
from telecoder.errors import BadInput, ServerUnavailable
from telecoder.urls import is_url

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of the quick submit
if TYPE_CHECKING:
    from typing import Any

CONNECT_SECONDS = 5.0
REQUEST_SECONDS = 30.0
_PROXIES = ("http_proxy", "https_proxy", "all_proxy")


def absolute(repo: str) -> str:
    """A URL as given; a path made absolute here (the server resolves it on its machine)."""
    if is_url(repo):
        return repo
    joined = repo if repo.startswith("/") else f"{os.getcwd()}/{repo}"
    if not repo.startswith("~") and (not joined.startswith("//") or joined.startswith("///")):
        # What pathlib makes of it (empty and "." parts dropped), without importing it (~4 ms).
        return "/" + "/".join(part for part in joined.split("/") if part not in ("", "."))
    from pathlib import Path

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
    try:
        port = parts.port
    except ValueError:
        raise BadInput(f"the server's port is not a number: {server!r}") from None
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    headers = {
        "user-agent": f"telecoder/{__version__}",
        "accept": "application/json",
        "content-type": "application/json",
    }
    if token:
        headers["authorization"] = f"Bearer {token}"
    payload = json.dumps(body, ensure_ascii=False).encode()
    path = parts.path.rstrip("/") + "/api/sessions"
    try:
        if parts.scheme == "http" and parts.netloc.isascii():
            answered = _post(parts.hostname, port or 80, parts.netloc, path, payload, headers)
        else:
            answered = _post_tls(parts.scheme, parts.hostname, port, path, payload, headers)
    except TimeoutError:
        raise ServerUnavailable(f"the server at {shown} did not answer") from None
    except OSError as e:
        reason = str(e) or type(e).__name__
        raise ServerUnavailable(f"cannot reach the server at {shown}: {reason}") from None
    except _Malformed as e:
        raise ServerUnavailable(f"cannot reach the server at {shown}: {e}") from None
    status, reason, fields, raw = answered
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    error = error_for(
        status,
        answer,
        reason=reason,
        retry_after=fields.get("retry-after"),
    )
    if error is not None:
        raise error
    if not isinstance(answer, dict):
        raise ServerUnavailable(
            f"{shown} answered {status} without JSON: is it a TeleCoder server?"
        )
    return answer


class _Malformed(Exception):
    """The answer is not HTTP as this module reads it."""


Answer = tuple[int, str, dict[str, str], bytes]  # status, reason, header fields, body


def _post(
    host: str, port: int, netloc: str, path: str, payload: bytes, headers: dict[str, str]
) -> Answer:
    """One HTTP/1.1 POST over a plain socket (``Connection: close``, the answer read to its
    end). ``http.client`` imports the email parser and ssl: some 15 ms of a 150 ms command."""
    import socket

    fields = {
        "host": netloc,
        **headers,
        "accept-encoding": "identity",
        "content-length": str(len(payload)),
        "connection": "close",
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    chunks: list[bytes] = []
    with socket.create_connection((host, port), timeout=CONNECT_SECONDS) as sock:
        sock.settimeout(REQUEST_SECONDS)
        sock.sendall(head.encode("latin-1") + b"\r\n" + payload)
        while data := sock.recv(65536):
            chunks.append(data)
    return _parse(b"".join(chunks))


def _parse(raw: bytes) -> Answer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise _Malformed("the answer ended early" if raw else "the connection closed unanswered")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise _Malformed(f"not an HTTP answer: {lines[0][:80]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif (length := fields.get("content-length", "")).isdigit():
        if len(body) < int(length):
            raise _Malformed("the answer ended early")
        body = body[: int(length)]
    return int(code), reason.strip(), fields, body


def _dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, sep, body = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Malformed("a malformed chunked answer") from None
        if not sep or len(body) < size:
            raise _Malformed("the answer ended early")
        if size == 0:
            return b"".join(out)
        out.append(body[:size])
        body = body[size + 2 :]


def _post_tls(
    scheme: str, host: str, port: int | None, path: str, payload: bytes, headers: dict[str, str]
) -> Answer:
    """The same POST through ``http.client`` (https; a host name that is not ASCII)."""
    import http.client

    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=CONNECT_SECONDS)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=CONNECT_SECONDS)
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(REQUEST_SECONDS)
        connection.request("POST", path, payload, headers)
        response = connection.getresponse()
        raw = response.read()
        fields = {k.lower(): v for k, v in response.getheaders()}
        return response.status, response.reason, fields, raw
    except http.client.HTTPException as e:
        raise _Malformed(str(e) or type(e).__name__) from None
    finally:
        connection.close()
