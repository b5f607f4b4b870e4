"""`telecoder status`: the queue per status, live workers, sandbox, endpoints and the last
failures — read from the local store (SQLite and PostgreSQL), and from a real `telecoder serve`
through `GET /api/status`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

from telecoder.domain import FailureKind, NewSession, SessionStatus
from telecoder.store import open_store
from telecoder.store.queue import Outcome
from tests.cli import cli_env, start_serve, telecoder, until_serving

TOKEN = "status-token-0123456789abcdef"
REASON = "tests failed: test_parse (expected 3, got 4)"


async def _fill(db_url: str) -> str:
    """Two queued sessions, one failed with a reason, a live worker; the failed one's id."""
    store = await open_store(db_url)
    try:
        for prompt in ("one", "two", "three"):
            await store.sessions.create(NewSession(repo="/tmp/r", prompt=prompt, engine="shell"))
        claimed = await store.queue.claim("w-status")
        assert claimed is not None
        await store.queue.finish(
            claimed.lease,
            Outcome(
                status=SessionStatus.FAILED,
                failure_kind=FailureKind.BAD_INPUT,
                error=REASON,
                retryable=False,
            ),
        )
        await store.workers.register(
            "w-status", host="box-1", pid=os.getpid(), capacity=3, engines=["shell"]
        )
        return claimed.session.id
    finally:
        await store.close()


def _check(found: dict, failed_id: str) -> None:
    assert found["queue"]["queued"] == 2
    assert found["queue"]["failed"] == 1
    assert found["workers"]["live"] == 1
    assert found["workers"]["slots"] == 3
    assert found["workers"]["list"][0]["host"] == "box-1"
    assert found["sandbox"]["status"] in ("ok", "unavailable")
    assert found["recent_failures"] == [
        {
            "id": failed_id,
            "repo": "/tmp/r",
            "failure_kind": "bad_input",
            "reason": REASON,
            "finished_at": found["recent_failures"][0]["finished_at"],
        }
    ]


async def test_status_of_the_local_store(tmp_path: Path, db_url: str) -> None:
    failed_id = await _fill(db_url)
    env = cli_env(tmp_path, TELECODER_DATABASE_URL=db_url)
    done = telecoder("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["source"] == "local"
    _check(found, failed_id)
    text = telecoder("status", env=env).stdout
    assert "queued 2, failed 1" in text
    assert f"{failed_id} bad_input: {REASON}" in text
    assert "1 live, 0/3 slots in use" in text
    assert found["claims"]["paused"] is False
    assert "PAUSED" not in text
    assert telecoder("pause", env=env).returncode == 0
    paused = json.loads(telecoder("status", "--json", env=env).stdout)["claims"]
    assert paused["paused"] is True
    assert paused["since"] is not None
    assert "claims      PAUSED" in telecoder("status", env=env).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_of_a_server_and_its_refusals(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'telecoder.db'}"
    failed_id = asyncio.run(_fill(db_url))
    port = free_port()
    env = cli_env(tmp_path, TELECODER_API_TOKEN=TOKEN, TELECODER_PORT=str(port))
    proc = start_serve(env)
    url = f"http://127.0.0.1:{port}"
    try:
        until_serving(proc, url, statuses=(200, 503))
        client = cli_env(tmp_path / "elsewhere", TELECODER_TOKEN=TOKEN)
        done = telecoder("status", "--server", url, "--json", env=client)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        assert found["source"] == "server"
        assert found["server"]["reachable"]
        _check(found, failed_id)
        assert f"{url}: reachable" in telecoder("status", "--server", url, env=client).stdout
        del client["TELECODER_TOKEN"]
        assert telecoder("status", "--server", url, env=client).returncode == 7
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    done = telecoder("status", "--server", url, "--json", env=client)
    assert done.returncode == 6
    assert json.loads(done.stdout)["error"]["code"] == "unavailable"
