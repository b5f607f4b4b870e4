"""``telecoder mcp``: TeleCoder's MCP tools over stdio, for an agent that runs this command.

With ``TELECODER_SERVER`` (or ``--server``) the tools call that server's API with
``TELECODER_TOKEN``; without, they call the API of an app built in-process on the local store
(no workers here: a ``telecoder serve`` or ``telecoder worker`` on the same store runs the
sessions). Either way the tools are the client's calls (``telecoder.mcptools``). The MCP SDK and
the web stack are imported when the command runs, never for ``telecoder --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from telecoder.cli.common import load_settings, opened
from telecoder.cli.options import TOKEN_ENV, ServerOption

_SELF = "http://127.0.0.1"


def mcp(server: ServerOption = None) -> None:
    """Serve TeleCoder's MCP tools on stdio (submit, wait, follow, cancel, list sessions)."""
    from telecoder import mcptools
    from telecoder.client import Client

    if server:

        @contextlib.asynccontextmanager
        async def remote(_: Any) -> AsyncIterator[Client]:
            async with Client(server, token=os.environ.get(TOKEN_ENV) or None) as api:
                yield api

        Client(server)  # a malformed URL fails now, not at the first tool call
        asyncio.run(mcptools.build(remote, local_paths=True).run_stdio_async())
        return

    asyncio.run(_local())


async def _local() -> None:
    import httpx

    from telecoder import mcptools
    from telecoder.client import Client
    from telecoder.server.app import create_app

    settings = load_settings()
    async with opened(settings) as store:
        # In-process only: no listening socket, so no token to check.
        local = settings.model_copy(update={"api_token": None, "host": "127.0.0.1"})
        app = create_app(local, store)

        @contextlib.asynccontextmanager
        async def connect(_: Any) -> AsyncIterator[Client]:
            transport = httpx.ASGITransport(app=app)
            async with Client(_SELF, transport=transport) as api:
                yield api

        await mcptools.build(connect, local_paths=True).run_stdio_async()
