"""``/mcp``: TeleCoder's MCP tools over streamable HTTP, behind the API's bearer tokens.

The route checks the caller the way ``/api`` does (``Guard``): on a server with tokens, a
request without a valid ``Authorization: Bearer`` token is refused with 401 before the MCP
layer sees it. The tools (``telecoder.mcptools``) then call the server's own API in-process
(httpx over ASGI) with the caller's token, so MCP can do exactly what that token can do.
Stateless, JSON responses: no MCP session to keep between requests or across servers.

The MCP SDK is imported and its session manager started at the first request to ``/mcp``, so a
server nobody asks over MCP starts without it (it is a fifth of the app's imports).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from telecoder.client import Client
from telecoder.server import roles
from telecoder.server.auth import AuthError, Guard

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

PATH = "/mcp"
_SELF = "http://127.0.0.1"  # in-process: the Host an open server accepts


def _bearer(request: Any) -> str | None:
    if request is None:
        return None
    scheme, _, token = str(request.headers.get("authorization", "")).partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class McpRoute:
    """The ASGI endpoint of ``/mcp``; ``running()`` belongs in the app's lifespan."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.app: ASGIApp | None = None  # the API the tools call: set once the app is built
        self._manager: StreamableHTTPSessionManager | None = None
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def _connect(self, request: Any) -> AsyncIterator[Client]:
        assert self.app is not None, "McpRoute.app is set by create_app"
        transport = httpx.ASGITransport(app=self.app)
        async with Client(_SELF, token=_bearer(request), transport=transport) as api:
            yield api

    async def _started(self) -> StreamableHTTPSessionManager:
        async with self._starting:
            if self._manager is not None:
                return self._manager
            from mcp.server.transport_security import TransportSecuritySettings

            from telecoder import mcptools

            server = mcptools.build(self._connect)
            # Host and origin are screened by the guard, as for /api (the SDK's own check
            # would refuse the server's public name).
            server.streamable_http_app(
                stateless_http=True,
                json_response=True,
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            manager = server.session_manager
            ready = asyncio.Event()

            async def run() -> None:
                async with manager.run():
                    ready.set()
                    await self._stop.wait()

            self._task = asyncio.create_task(run(), name="mcp")
            waiting = asyncio.create_task(ready.wait())
            await asyncio.wait({self._task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if self._task.done():
                self._task.result()  # it failed to start: say why
            self._manager = manager
            return manager

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the app's lifespan: stops the session manager, if a request started it."""
        try:
            yield
        finally:
            self._stop.set()
            if self._task is not None:
                await self._task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            await self.guard.screen(request)
            principal = await self.guard.identify(request)
            if principal is None or principal.via == "cookie":
                raise AuthError(401, "an API token is required: Authorization: Bearer TOKEN")
            # Its tools call the API with the caller's token: their roles are checked there.
            roles.check(principal, request.method, PATH)
        except AuthError as e:
            headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
            code = "unauthorized" if e.status == 401 else "forbidden"
            body = {"error": code, "detail": e.detail, "fields": []}
            await JSONResponse(body, status_code=e.status, headers=headers)(scope, receive, send)
            return
        manager = await self._started()
        await manager.handle_request(scope, receive, send)
