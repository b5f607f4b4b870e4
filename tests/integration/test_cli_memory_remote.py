"""``telecoder memory … --server URL``: the same commands against a real server on a real port
(``/api/memories``), with the same JSON, the same name resolution (on the server's machine) and
the same exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder.server import create_app
from telecoder.store import Store, open_store
from tests.cli import cli_env, telecoder
from tests.conftest import make_repo
from tests.integration.test_cli_inbox import error_of
from tests.server import serving

TOKEN = "memory-remote-token-0123456789"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "cli-home"
    home.mkdir()
    # No database here: everything goes through the server.
    return cli_env(
        home, TELECODER_DATABASE_URL="sqlite:////nonexistent/x.db", TELECODER_TOKEN=TOKEN
    )


@pytest.fixture
async def server_store(tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite only: what is tested is the transport (test_cli_memory.py and
    test_api_memories.py run the rest on PostgreSQL too)."""
    store = await open_store(f"sqlite:///{tmp_path / 'server.db'}", lease_seconds=5)
    yield store
    await store.close()


async def cli(env: dict[str, str], *args: str, cwd: Path | None = None):
    """The command in a thread: the server of this event loop has to answer it."""
    return await asyncio.to_thread(telecoder, "memory", *args, env=env, cwd=cwd)


def ok(done: subprocess.CompletedProcess[str]):
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


async def test_memory_over_a_server(settings, server_store, env, tmp_path):
    store = server_store
    repo = make_repo(tmp_path).path
    (repo / "docs").mkdir()
    await store.repos.add("site", str(repo), engine=None, priority=0)
    secured = settings.model_copy(
        update={"api_token": SecretStr(f"ops:{TOKEN}"), "memory_embedder": "none"}
    )
    async with serving(create_app(secured, store)) as url:
        s = ["--server", url, "--json"]
        added = ok(await cli(env, "add", ".", f"Build docs with mkdocs {TOKEN}", *s, cwd=repo))
        assert added == (await store.memories.get(added["id"])).to_dict()
        assert added["repo"] == str(repo)
        assert TOKEN not in added["text"]  # masked by the server
        by_dot = ok(await cli(env, "list", ".", *s, cwd=repo / "docs"))
        by_name = ok(await cli(env, "list", "site", *s))
        assert by_dot == by_name == [added]
        assert ok(await cli(env, "show", str(added["id"]), *s)) == added
        fact = ok(await cli(env, "add", "--user", "slack:U9", "Likes tabs", "--kind", "fact", *s))
        assert ok(await cli(env, "list", "--user", "slack:U9", *s)) == [fact]
        assert ok(await cli(env, "list", *s)) == {
            "repos": [{"repo": str(repo), "memories": 1}],
            "users": [{"user": "slack:U9", "memories": 1}],
        }
        table = await cli(env, "list", "site", "--server", url)
        assert "Build docs with mkdocs" in table.stdout
        assert ok(await cli(env, "forget", str(added["id"]), *s)) == added
        assert await store.memories.list(repo=str(repo)) == []

        error_of(await cli(env, "show", str(added["id"]), *s), "not_found")
        error_of(await cli(env, "forget", str(added["id"]), *s), "not_found")
        assert "registered" in error_of(await cli(env, "list", "no-such-name", *s), "bad_input")
        assert "text" in error_of(await cli(env, "add", "site", " ", *s), "bad_input")
        wrong = await asyncio.to_thread(
            telecoder, "memory", "list", *s, env={**env, "TELECODER_TOKEN": "wrong-token-0000"}
        )
    assert wrong.returncode == 7
    assert json.loads(wrong.stdout)["error"]["code"] == "unauthorized"
