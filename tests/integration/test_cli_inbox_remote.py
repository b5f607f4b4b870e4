"""``telecoder inbox … --server URL``: the same commands against a real server on a real port
(``/api/inbox``), with the same JSON, the same errors and the same exit codes; waits are
long-polls."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from telecoder.server import create_app
from telecoder.store import Store, open_store
from tests.cli import TELECODER, cli_env, telecoder
from tests.integration.test_cli_inbox import ErrorBody, error_of
from tests.server import serving

TOKEN = "inbox-remote-token-0123456789"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "cli-home"
    home.mkdir()
    # No database here: everything goes through the server.
    return cli_env(
        home, TELECODER_DATABASE_URL="sqlite:////nonexistent/x.db", TELECODER_TOKEN=TOKEN
    )


@pytest.fixture
async def local_store(tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite only for the process-heavy tests: what they test is the transport (the store is
    the same on both, and test_cli_inbox.py runs it on PostgreSQL too)."""
    store = await open_store(f"sqlite:///{tmp_path / 'server.db'}", lease_seconds=5)
    yield store
    await store.close()


async def cli(env: dict[str, str], *args: str, agent: str | None = None):
    """The command in a thread: the server of this event loop has to answer it."""
    who = ["--as", agent] if agent else []
    return await asyncio.to_thread(telecoder, "inbox", *args, *who, env=env)


def ok(done: subprocess.CompletedProcess[str]):
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


async def test_the_inbox_over_a_server(settings, local_store, env, tmp_path):
    store = local_store
    secured = settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")})
    (tmp_path / "plan.txt").write_bytes(b"step 1\nstep 2\n")
    async with serving(create_app(secured, store)) as url:
        s = ["--server", url, "--json"]
        sent = ok(
            await cli(
                env,
                "send",
                "--to",
                "w1",
                "--body",
                "build it",
                "--artifact",
                str(tmp_path / "plan.txt"),
                *s,
                agent="lead",
            )
        )
        mid = str(sent["id"])
        local = (await store.inbox.get(sent["id"])).to_dict()
        assert sent == local  # the same JSON as the local command prints
        assert [m["id"] for m in ok(await cli(env, "fetch", *s, agent="w1"))] == [sent["id"]]
        assert ok(await cli(env, "fetch", *s, agent="w1")) == []

        claimed = ok(await cli(env, "claim", mid, "--lease", "60", *s, agent="w1"))
        assert claimed["claimed_by"] == "w1"
        assert "claimed by w1" in error_of(await cli(env, "claim", mid, *s, agent="w2"), "conflict")
        assert ok(await cli(env, "update", mid, "--body", "half", *s, agent="w1"))["progress"] == (
            "half"
        )
        out = tmp_path / "got.txt"
        args = ["show", mid, "--artifact", "plan.txt", "--output", str(out), *s]
        assert ok(await cli(env, *args))["size"] == 14
        assert out.read_bytes() == b"step 1\nstep 2\n"

        # wait-reply blocks (long-polls) until the reply lands from another process.
        waiting = await asyncio.to_thread(
            subprocess.Popen,
            [TELECODER, "inbox", "wait-reply", mid, "--timeout", "30", *s, "--as", "lead"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(1.0)
        assert waiting.poll() is None
        answer = ok(await cli(env, "reply", mid, "--body", "built", *s, agent="w1"))
        got, errors = await asyncio.to_thread(waiting.communicate, timeout=30)
        assert waiting.returncode == 0, errors
        assert [m["id"] for m in json.loads(got)] == [answer["id"]]
        started = time.monotonic()
        late = await cli(env, "wait-reply", mid, "--timeout", "0.5", *s, agent="lead")
        error_of(late, "timed_out")
        assert time.monotonic() - started < 15

        done = ok(await cli(env, "done", mid, "--note", "shipped", *s, agent="w1"))
        assert (done["status"], done["note"]) == ("done", "shipped")
        assert "done" in error_of(await cli(env, "cancel", mid, *s, agent="w1"), "conflict")
        error_of(await cli(env, "show", "999999", *s), "not_found")

        # A claim that expires: the holder's renewal is lease lost (409 lease_lost -> exit 9).
        other = ok(await cli(env, "send", "--to", "w1", "--body", "again", *s, agent="lead"))
        ok(await cli(env, "claim", str(other["id"]), "--lease", "0.3", *s, agent="w1"))
        await asyncio.sleep(0.4)
        error_of(await cli(env, "renew", str(other["id"]), *s, agent="w1"), "lease_lost")
        assert ok(await cli(env, "claim", str(other["id"]), *s, agent="w2"))["claimed_by"] == "w2"

        thread = ok(await cli(env, "list", "--thread", sent["thread"], *s))
        assert [m["id"] for m in thread] == [sent["id"], answer["id"]]
        refused = await asyncio.to_thread(
            telecoder, "inbox", "show", mid, *s, env={**env, "TELECODER_TOKEN": "wrong"}
        )
        assert refused.returncode == 7
        assert ErrorBody.model_validate(json.loads(refused.stdout)).error.code == "unauthorized"


async def test_watch_over_a_server_long_polls(settings, local_store, env):
    store = local_store
    secured = settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")})
    first = await store.inbox.send(sender="lead", recipient="w", body="start")
    async with serving(create_app(secured, store)) as url:
        args = ["--thread", first.thread, "--since", str(first.id), "--timeout", "4", "--json"]
        watching = await asyncio.to_thread(
            subprocess.Popen,
            [TELECODER, "inbox", "watch", *args, "--server", url, "--as", "w"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(1.0)
        later = await store.inbox.send(sender="lead", thread=first.thread, body="more")
        out, errors = await asyncio.to_thread(watching.communicate, timeout=30)
    *lines, last = [json.loads(line) for line in out.splitlines()]
    assert [m["id"] for m in lines] == [later.id], errors
    assert watching.returncode == 10
    assert last["error"]["code"] == "timed_out"


async def test_the_routes_answer_lease_lost_and_long_poll(settings, store):
    secured = settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")})
    asked = await store.inbox.send(sender="w", recipient="lead", body="?")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        serving(create_app(secured, store)) as url,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http,
    ):
        lost = await http.post(
            f"/api/inbox/messages/{asked.id}/renew", json={"agent": "lead", "lease": 5}
        )
        assert lost.status_code == 409
        assert lost.json()["error"] == "lease_lost"
        started = time.monotonic()
        empty = await http.post("/api/inbox/replies", json={"agent": "w", "wait": 0.5})
        assert empty.json() == []
        assert time.monotonic() - started >= 0.5

        async def answer_later() -> None:
            await asyncio.sleep(0.5)
            await store.inbox.reply(asked.id, sender="lead", body="yes")

        task = asyncio.create_task(answer_later())
        got = await http.post(
            "/api/inbox/replies", json={"agent": "w", "reply_to": asked.id, "wait": 10}
        )
        await task
        assert [m["body"] for m in got.json()] == ["yes"]
        too_long = await http.get("/api/inbox/messages", params={"wait": 600})
        assert too_long.status_code == 422
        nowhere = await http.post("/api/inbox/messages", json={"agent": "a", "body": "x"})
        assert nowhere.status_code == 422
        unauthorized = await http.get("/api/inbox/latest", headers={"Authorization": "Bearer no"})
        assert unauthorized.status_code == 401
