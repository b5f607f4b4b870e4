"""TeleCoder as an MCP server, driven by the official MCP client library (``mcp.client``).

One ``telecoder serve`` process (with a token and its embedded worker) is shared by the module:
``/mcp`` on it over streamable HTTP, and ``telecoder mcp`` over stdio both against it
(``TELECODER_SERVER``) and on its database directly (the local store: the server's worker runs
what that submits).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.cli import TELECODER, cli_env
from tests.conftest import GitRepo, make_repo
from tests.e2e.test_cli_remote import TOKEN, Server, start, stop
from tests.e2e.test_serve import free_port

pytestmark = pytest.mark.timeout(120)

TOOLS = {
    "submit_task",
    "get_session",
    "wait_session",
    "session_events",
    "cancel_session",
    "list_sessions",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server-home")
    port = free_port()
    running = Server(url=f"http://127.0.0.1:{port}", home=home, proc=start(home, port))
    try:
        yield running
    finally:
        stop(running.proc)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return make_repo(tmp_path_factory.mktemp("repos"))


@contextlib.asynccontextmanager
async def over_http(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def over_stdio(home: Path, **env: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=TELECODER, args=["mcp"], env=cli_env(home, **env))
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None, result.content
    return dict(result.structured_content)


async def error_of(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    return " ".join(getattr(c, "text", "") for c in result.content)


async def submit_wait_read(session: ClientSession, repo: GitRepo, marker: str) -> dict[str, Any]:
    """Submit a shell task that writes ``marker``, wait for it, read its result and events."""
    tools = await session.list_tools()
    assert {t.name for t in tools.tools} >= TOOLS
    created = await call(
        session,
        "submit_task",
        repo=str(repo.path),
        prompt=f"echo {marker} > mcp.txt; echo said-{marker}",
        engine="shell",
    )
    assert created["status"] == "queued"
    waited = await call(session, "wait_session", id=created["id"], timeout=60)
    assert waited["finished"], waited
    assert not waited["timed_out"]
    done = waited["session"]
    assert done["status"] == "succeeded", done
    assert repo.remote_git("show", f"{done['branch']}:mcp.txt") == marker
    page = await call(session, "session_events", id=created["id"], after_seq=0)
    assert any(f"said-{marker}" in json.dumps(e["data"]) for e in page["events"]), page
    later = await call(session, "session_events", id=created["id"], after_seq=page["next_after"])
    assert later["events"] == []
    shown = await call(session, "get_session", id=created["id"])
    assert shown["id"] == created["id"]
    assert shown["status"] == "succeeded"
    listed = await call(session, "list_sessions", status="succeeded", limit=50)
    assert created["id"] in {s["id"] for s in listed["sessions"]}
    return done


async def test_http_client_submits_waits_and_reads_the_result(server: Server, repo: GitRepo):
    async with over_http(server.url, TOKEN) as session:
        await submit_wait_read(session, repo, "over-http")
        missing = await error_of(session, "get_session", id="nosuchsession")
        assert "SessionNotFound" in missing
        bad = await error_of(session, "list_sessions", status="finished")
        assert "unknown status 'finished'" in bad


async def test_http_cancel_stops_a_running_session(server: Server, repo: GitRepo):
    async with over_http(server.url, TOKEN) as session:
        created = await call(
            session, "submit_task", repo=str(repo.path), prompt="sleep 60", engine="shell"
        )
        cancelled = await call(session, "cancel_session", id=created["id"])
        assert cancelled["id"] == created["id"]
        waited = await call(session, "wait_session", id=created["id"], timeout=30)
        assert waited["session"]["status"] == "cancelled", waited


async def test_http_refuses_a_missing_or_wrong_token(server: Server):
    for token in (None, "wrong-token-0123456789"):
        plain = httpx2.post(
            f"{server.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"authorization": f"Bearer {token}"} if token else {},
        )
        assert plain.status_code == 401, plain.text
        assert TOKEN not in plain.text
        # The official client: its initialize fails on the 401 (within the SDK's task groups).
        with pytest.raises(ExceptionGroup) as refused:
            async with over_http(server.url, token) as session:
                await session.list_tools()
        assert refused.group_contains(MCPError, depth=None)


async def test_stdio_against_the_server(server: Server, repo: GitRepo, tmp_path: Path):
    env = {"TELECODER_SERVER": server.url, "TELECODER_TOKEN": TOKEN}
    async with over_stdio(tmp_path, **env) as session:
        await submit_wait_read(session, repo, "over-stdio")
    assert not (tmp_path / "telecoder.db").exists(), "the stdio server opened a local database"


async def test_stdio_with_a_wrong_token_says_so(server: Server, repo: GitRepo, tmp_path: Path):
    env = {"TELECODER_SERVER": server.url, "TELECODER_TOKEN": "wrong-token-0123456789"}
    async with over_stdio(tmp_path, **env) as session:
        text = await error_of(session, "submit_task", repo=str(repo.path), prompt="true")
    assert "Unauthorized" in text
    assert "wrong-token" not in text


async def test_stdio_on_the_local_store(server: Server, repo: GitRepo):
    # The server's own home: the session lands in its database and its worker runs it.
    async with over_stdio(server.home) as session:
        await submit_wait_read(session, repo, "local-store")
