"""TeleCoder as an MCP server: tools any agent can call to hand a job to TeleCoder.

Every tool is a call of :class:`~telecoder.client.Client` — the client the CLI's ``--server``
commands use — so MCP answers what the HTTP API answers, with the same checks and the same JSON.
Who the client talks to is the caller's choice (``connect``):

- ``telecoder mcp`` (stdio): a running server (``TELECODER_SERVER`` + ``TELECODER_TOKEN``), or
  the local store through the app in-process (``cli/mcp.py``);
- ``/mcp`` on ``telecoder serve`` (streamable HTTP): the server's own API in-process, with the
  caller's bearer token (``server/mcp_route.py``), so an MCP caller can do exactly what its
  token can do over ``/api``.

Errors come back as MCP tool errors (``isError``) carrying the API's message, never a token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from telecoder import __version__
from telecoder.client import Client, Json
from telecoder.domain import SessionStatus
from telecoder.errors import TeleCoderError

# How a tool reaches the API: given the HTTP request the tool call came in (None on stdio).
Connect = Callable[[Any], AbstractAsyncContextManager[Client]]

POLL_SECONDS = 0.5
MAX_WAIT_SECONDS = 3600.0
MAX_LIST = 200
INSTRUCTIONS = (
    "TeleCoder runs coding agents in the background. submit_task queues a task on a repository "
    "(a local path on the TeleCoder host or a git URL) and returns the session; wait_session "
    "returns when it ends (or needs an answer: status 'blocked'); get_session shows its result "
    "(branch, pull request, answer), session_events its progress."
)


def _tool_error(e: TeleCoderError) -> ToolError:
    return ToolError(f"{type(e).__name__}: {e.message}")


def build(connect: Connect, *, local_paths: bool = False) -> MCPServer:
    """The MCP server's tools over ``connect``. ``local_paths``: a repo that is a path on this
    machine is made absolute (stdio, where the caller's working directory is meaningful)."""
    server: MCPServer = MCPServer(
        "telecoder", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    async def call(ctx: Context, what: Callable[[Client], Any]) -> Any:
        try:
            async with connect(ctx.request_context.request) as api:
                return await what(api)
        except TeleCoderError as e:
            raise _tool_error(e) from None

    @server.tool()
    async def submit_task(
        repo: str,
        prompt: str,
        ctx: Context,
        engine: str | None = None,
        model: str | None = None,
        base: str | None = None,
        mode: str = "task",
        priority: int = 0,
    ) -> Json:
        """Queue a task on a repository; returns the new session (its ``id`` for the other tools).

        repo: a local path on the TeleCoder host, or a git URL. prompt: what to do (for the
        ``shell`` engine: the command). engine: e.g. claude-code, codex, shell (default: the
        repository's or the server's). base: the branch, tag or commit to start from.
        mode: ``task`` (runs once) or ``chat`` (takes follow-ups)."""
        if local_paths and "://" not in repo and Path(repo).expanduser().exists():
            repo = str(Path(repo).expanduser().absolute())
        body: Json = {"repo": repo, "prompt": prompt, "mode": mode, "priority": priority}
        body.update({k: v for k, v in (("engine", engine), ("model", model), ("base", base)) if v})
        return dict(await call(ctx, lambda api: api.create(body)))

    @server.tool()
    async def get_session(id: str, ctx: Context) -> Json:
        """One session by id (or a unique prefix): status, result, error, cost and attempts."""
        return dict(await call(ctx, lambda api: api.get(id)))

    @server.tool()
    async def wait_session(id: str, ctx: Context, timeout: float = 600.0) -> Json:  # noqa: ASYNC109 (the tool's argument)
        """Wait until the session ends (succeeded, failed, cancelled, dead, skipped) or needs an
        answer (blocked), at most ``timeout`` seconds (up to 3600). Returns
        ``{"finished": bool, "timed_out": bool, "session": {...}}``."""
        deadline = time.monotonic() + max(0.0, min(timeout, MAX_WAIT_SECONDS))

        async def until_done(api: Client) -> Json:
            while True:
                session = await api.get(id)
                status = SessionStatus(session["status"])
                done = status.terminal or status is SessionStatus.BLOCKED
                if done or time.monotonic() >= deadline:
                    return {"finished": status.terminal, "timed_out": not done, "session": session}
                await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

        return dict(await call(ctx, until_done))

    @server.tool()
    async def session_events(id: str, ctx: Context, after_seq: int = 0, limit: int = 200) -> Json:
        """The session's events with ``seq > after_seq`` (status changes, agent messages, tool
        calls, the result): ``{events, next_after, more, status}``; pass ``next_after`` back
        as ``after_seq`` to follow it."""
        limit = max(1, min(limit, 1000))
        return dict(await call(ctx, lambda api: api.event_page(id, after=after_seq, limit=limit)))

    @server.tool()
    async def cancel_session(id: str, ctx: Context) -> Json:
        """Cancel a session: at once if queued; a running one stops within a heartbeat."""
        return dict(await call(ctx, lambda api: api.cancel(id)))

    @server.tool()
    async def list_sessions(ctx: Context, status: str | None = None, limit: int = 20) -> Json:
        """Sessions, newest first, optionally of one status (queued, running, succeeded, failed,
        cancelled, blocked, dead): ``{"sessions": [...]}``, at most ``limit`` (up to 200)."""
        if status is not None and status not in {s.value for s in SessionStatus}:
            choices = ", ".join(s.value for s in SessionStatus)
            raise ToolError(f"BadInput: unknown status {status!r}; one of {choices}")
        limit = max(1, min(limit, MAX_LIST))
        sessions = await call(ctx, lambda api: api.list(status=status, limit=limit))
        return {"sessions": sessions}

    return server
