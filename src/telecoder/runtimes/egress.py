"""The egress proxy: the only way out of a sandbox, enforcing its network policy from outside.

One proxy per sandboxed process tree, listening on a Unix socket that is bound into the sandbox
(the sandbox has no network interface but loopback; ``sandbox_init`` bridges a loopback port to
the socket). It speaks HTTP proxying as every agent CLI and package manager expects: ``CONNECT
host:port`` (HTTPS, and the tunnels ``sandbox_init`` opens for forwarded model endpoints) and
absolute-form plain HTTP requests (forwarded with ``Connection: close``, one request per
connection). Each host is checked against the policy, resolved once here and connected to by
the address that was checked (with the ``open`` policy a name that resolves to a loopback or
private address is refused: only hosts the policy names may be local). A refused connection is
answered 403 and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from telecoder.protocols import Endpoint, NetworkPolicy

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
CHUNK = 1 << 16
_HOP_HEADERS = {b"proxy-connection", b"connection", b"keep-alive", b"proxy-authorization"}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""
    explicit: bool = False  # named by the policy: may be a loopback or private address


def decide(policy: NetworkPolicy, host: str, port: int) -> Decision:
    """Whether ``policy`` lets a sandbox connect to ``host:port`` (before resolving it)."""
    host = normalise(host)
    if policy.mode == "none":
        return Decision(False, "network policy is none")
    if any(normalise(e.host) == host and e.port == port for e in policy.endpoints):
        return Decision(True, explicit=True)
    if policy.mode == "model":
        return Decision(False, "not a model endpoint (network policy model)")
    if any(_matches(rule, host, port) for rule in policy.allow):
        return Decision(True, explicit=True)
    if policy.mode == "allowlist":
        return Decision(False, "not in the network allowlist")
    return Decision(True)  # open: any public address


def normalise(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _matches(rule: str, host: str, port: int) -> bool:
    rule = rule.strip().lower()
    if not rule:
        return False
    name, sep, rule_port = rule.rpartition(":") if rule.count(":") == 1 else ("", "", "")
    if sep:
        if not rule_port.isdigit() or int(rule_port) != port:
            return False
        rule = name
    rule = normalise(rule)
    if rule.startswith("*."):
        suffix = rule[1:]
        return host.endswith(suffix) or host == rule[2:]
    if rule.startswith("."):
        return host.endswith(rule) or host == rule[1:]
    return host == rule


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not ip.is_multicast


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressProxy:
    """The proxy of one sandbox: a Unix socket at ``path`` (``start``), or listening sockets
    made inside the sandbox's own network namespace (``serve``)."""

    def __init__(
        self,
        policy: NetworkPolicy,
        path: Path,
        *,
        on_denied: Callable[[Endpoint, str], None] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.policy = policy
        self.path = path
        self.on_denied = on_denied
        self.connect_timeout = connect_timeout
        self.allowed: list[Endpoint] = []
        self.denied: list[Endpoint] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._servers.append(await asyncio.start_unix_server(self._serve, path=str(self.path)))

    async def serve(self, listeners: list[tuple[socket.socket, Endpoint | None]]) -> None:
        """Accept on sockets listening inside a sandbox: an HTTP proxy (None), or a loopback
        port standing for an endpoint, tunnelled to it as a ``CONNECT`` would be."""
        for listener, forward in listeners:

            async def serve(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                forward: Endpoint | None = forward,
            ) -> None:
                await self._serve(reader, writer, forward)

            self._servers.append(await asyncio.start_server(serve, sock=listener, limit=CHUNK))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _address(self, host: str) -> str:
        """``host``, or the address the policy names for it (like an /etc/hosts line)."""
        wanted = normalise(host)
        return next((a for name, a in self.policy.hosts if normalise(name) == wanted), host)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forward: Endpoint | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if forward is None:
                await self._handle(reader, writer)
            elif (upstream := await self._open(forward, writer, answer=False)) is not None:
                await _splice(reader, writer, *upstream)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # ``close``: the connection's own task ends quietly (asyncio 3.11 logs a cancelled
            # connection task as an error: its callback asks for the exception).
            pass
        except Exception:
            log.exception("egress proxy: a connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_head(reader)
        if head is None:
            return
        request_line, _, rest = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3:
            await _refuse(writer, 400, "malformed request line")
            return
        method, target, version = parts
        if method == b"CONNECT":
            endpoint = _authority(target.decode("latin-1"), default_port=443)
            if endpoint is None:
                await _refuse(writer, 400, "CONNECT needs host:port")
                return
            upstream = await self._open(endpoint, writer)
            if upstream is None:
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _splice(reader, writer, *upstream)
            return
        url = urlsplit(target.decode("latin-1"))
        if url.scheme != "http" or not url.hostname:
            await _refuse(writer, 400, "only CONNECT and absolute http:// requests are proxied")
            return
        endpoint = Endpoint(host=url.hostname, port=url.port or 80)
        upstream = await self._open(endpoint, writer)
        if upstream is None:
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = [
            line
            for line in rest.split(b"\r\n")
            if line and line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS
        ]
        up_reader, up_writer = upstream
        up_writer.write(
            b" ".join([method, path.encode("latin-1"), version])
            + b"\r\n"
            + b"".join(h + b"\r\n" for h in headers)
            + b"Connection: close\r\n\r\n"
        )
        await _splice(reader, writer, up_reader, up_writer)

    async def _open(
        self, endpoint: Endpoint, writer: asyncio.StreamWriter, *, answer: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to ``endpoint`` if the policy allows it; else the refusal is reported
        (and answered in HTTP when ``answer``: a forwarded port just closes)."""

        async def refuse(status: int, text: str) -> None:
            if answer:
                await _refuse(writer, status, text)

        decision = decide(self.policy, endpoint.host, endpoint.port)
        addresses: list[str] = []
        if decision.allowed:
            try:
                addresses = await _resolve(self._address(endpoint.host), endpoint.port)
            except OSError as e:
                await refuse(502, f"cannot resolve {endpoint.host}: {e}")
                return None
            if not decision.explicit and not all(_public(a) for a in addresses):
                decision = Decision(False, "resolves to a loopback or private address")
        if not decision.allowed:
            self.denied.append(endpoint)
            if self.on_denied is not None:
                self.on_denied(endpoint, decision.reason)
            await refuse(403, f"{endpoint} is not allowed: {decision.reason}")
            return None
        self.allowed.append(endpoint)
        error: OSError | None = None
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, endpoint.port, limit=CHUNK),
                    self.connect_timeout,
                )
            except (OSError, TimeoutError) as e:
                error = e if isinstance(e, OSError) else OSError(f"timed out after {e}")
        await refuse(502, f"cannot connect to {endpoint}: {error}")
        return None


def _authority(text: str, *, default_port: int) -> Endpoint | None:
    text = text.strip()
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        return None
    if not port_text:
        return Endpoint(host=host, port=default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return Endpoint(host=host, port=int(port_text))


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        return None
    if len(data) > MAX_HEAD:
        return None
    return data[:-4]


async def _refuse(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = f"TeleCoder egress proxy: {text}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        up_writer.close()
        with contextlib.suppress(Exception):
            await up_writer.wait_closed()
