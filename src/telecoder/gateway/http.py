"""A small HTTP/1.1 server on asyncio streams and h11, for the gateway.

Why not uvicorn: the gateway runs inside every worker, below the layers that may import a web
framework (``pyproject.toml``'s import contracts), and a proxy needs none of ASGI's machinery —
one request in, one streamed response out. h11 (already here as httpx's HTTP/1.1 engine) does the
parsing and framing (keep-alive, chunked bodies, ``Expect: 100-continue``); each chunk a handler
sends is written at once, so a stream passes through without buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import h11

log = logging.getLogger(__name__)

READ_SIZE = 1 << 16
Headers = Sequence[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client hung up before its response was written."""


class BodyTooLarge(Exception):
    """The request body is larger than the server accepts."""


@dataclass(slots=True)
class Request:
    method: str
    target: str  # path and query, as sent
    headers: list[tuple[str, str]]  # names in lower case, in order
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class Reply:
    """Writes the response to one request: ``start``, ``send`` as often as needed, ``end``."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self._conn = conn
        self._writer = writer
        self.started = False
        self.status = 0

    async def start(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        self.started, self.status = True, status
        await self._write(h11.Response(status_code=status, headers=list(headers), reason=reason))

    async def send(self, data: bytes) -> None:
        if data:
            await self._write(h11.Data(data=data))

    async def end(self) -> None:
        await self._write(h11.EndOfMessage())

    async def whole(self, status: int, headers: Headers, body: bytes) -> None:
        """A complete response with a body of known length."""
        length = [(b"content-length", str(len(body)).encode())]
        await self.start(status, [*headers, *length])
        await self.send(body)
        await self.end()

    async def _write(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if self._writer.is_closing():
            raise ClientGone
        if data:
            self._writer.write(data)
        try:
            await self._writer.drain()
        except ConnectionError as e:
            raise ClientGone from e


Handler = Callable[[Request, Reply], Awaitable[None]]


class HTTPServer:
    """Serves ``handler`` on a TCP address until closed."""

    def __init__(self, handler: Handler, *, max_body: int = 64 << 20) -> None:
        self.handler = handler
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_SIZE)
        sock = self._server.sockets[0]
        self.address = sock.getsockname()[:2]
        return self.address

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._one(conn, reader, writer):
                conn.start_next_cycle()
        except (ClientGone, ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether the connection can take another."""
        event = await _next(conn, reader)
        if not isinstance(event, h11.Request):
            return False
        reply = Reply(conn, writer)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        try:
            body = await self._body(conn, reader, writer)
        except BodyTooLarge:
            await reply.whole(413, [(b"content-type", b"text/plain")], b"request body too large\n")
            return False
        request = Request(event.method.decode(), event.target.decode("latin-1"), headers, body)
        try:
            await self.handler(request, reply)
        except (ClientGone, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("gateway: %s %s failed", request.method, request.target.split("?")[0])
            if reply.started:
                return False
            await reply.whole(500, [(b"content-type", b"text/plain")], b"gateway error\n")
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        parts: list[bytes] = []
        size = 0
        while True:
            event = await _next(conn, reader)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body:
                    raise BodyTooLarge
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise ClientGone


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        conn.receive_data(await reader.read(READ_SIZE))
