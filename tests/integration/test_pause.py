"""``pause``/``resume``: while paused no worker claims (the switch is in the database, read in
the claim statement), running sessions finish; resume lets the queue move again. A real worker
loop, the shell engine, real git; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from telecoder.assemble import build_worker
from telecoder.domain import SessionStatus
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.integration.test_engine_shell import request, tuned


async def wait_status(store: Store, session_id: str, *wanted: SessionStatus) -> SessionStatus:
    for _ in range(600):  # 30 s
        status = (await store.sessions.get(session_id)).status
        if status in wanted:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{session_id} still {status}, not {wanted}")


async def test_paused_claims_nothing_running_finishes_resume_runs_it(
    settings: Settings, store: Store, git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telecoder.worker")
    worker = build_worker(tuned(settings, runtime="local", worker_id="w-pause"), store)
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    try:
        running = request(git_repo, "sleep 1.5; echo one > one.txt")
        await store.sessions.create(running)
        await wait_status(store, running.id, SessionStatus.RUNNING)

        state = await store.control.pause(by="ops")
        assert state.paused
        assert state.by == "ops"
        assert state.since is not None
        assert (await store.control.pause(by="other")).by == "ops"  # the first pause stands
        waiting = request(git_repo, "echo two > two.txt")
        await store.sessions.create(waiting)
        # Many worker ticks (poll 0.05 s) while the running session finishes.
        finished = await wait_status(
            store, running.id, SessionStatus.SUCCEEDED, SessionStatus.FAILED
        )
        assert finished == SessionStatus.SUCCEEDED
        await asyncio.sleep(0.5)
        assert (await store.sessions.get(waiting.id)).status == SessionStatus.QUEUED
        assert await store.queue.claim("someone-else") is None  # any worker, not just this one
        assert "w-pause: claims are paused (by ops)" in caplog.text  # the worker's log says so

        assert not (await store.control.resume()).paused
        assert not (await store.control.pause_state()).paused
        started = time.monotonic()
        done = await wait_status(store, waiting.id, SessionStatus.SUCCEEDED, SessionStatus.FAILED)
        assert done == SessionStatus.SUCCEEDED
        assert time.monotonic() - started < 20
        for _ in range(100):  # the upkeep's next beat (every 0.5 s) notices
            if "w-pause: claims resumed" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert "w-pause: claims resumed" in caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(loop, 30)


async def test_pause_state_round_trips(store: Store) -> None:
    assert (await store.control.pause_state()).to_dict() == {
        "paused": False,
        "since": None,
        "by": None,
    }
    await store.control.pause(by="alice")
    again = await store.control.pause_state()
    assert again.paused
    assert again.by == "alice"
    await store.control.resume()
    await store.control.resume()  # twice is fine
    assert not (await store.control.pause_state()).paused


async def test_the_api_pauses_and_resumes_and_every_surface_shows_it(
    settings: Settings, store: Store
) -> None:
    from pydantic import SecretStr

    from telecoder.server import create_app
    from tests.server import client

    guarded = settings.model_copy(update={"api_token": SecretStr("s3cret-token")})
    auth = {"authorization": "Bearer s3cret-token"}
    async with client(create_app(guarded, store)) as c:
        assert (await c.post("/api/pause")).status_code == 401
        health = (await c.get("/api/health")).json()
        assert health["paused"] is False
        paused = await c.post("/api/pause", headers=auth)
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True
        assert paused.json()["by"]
        health = (await c.get("/api/health")).json()
        assert (health["paused"], health["paused_by"]) == (True, paused.json()["by"])
        page = await c.get("/", headers={**auth, "accept": "text/html"})
        assert 'id="paused"' in page.text
        assert (await store.control.pause_state()).paused
        resumed = await c.post("/api/resume", headers=auth)
        assert resumed.json() == {"paused": False, "since": None, "by": None}
        assert (await c.get("/api/health")).json()["paused"] is False
        page = await c.get("/", headers={**auth, "accept": "text/html"})
        assert 'id="paused"' not in page.text


def test_the_cli_pauses_resumes_and_workers_says_so(home, tmp_path) -> None:
    import json

    from tests.cli import cli_env, telecoder

    env = cli_env(home, TELECODER_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    done = telecoder("pause", "--by", "oncall", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["paused"] is True
    listed = telecoder("workers", env=env)
    assert "PAUSED" in listed.stderr
    assert "oncall" in listed.stderr
    done = telecoder("resume", env=env)
    assert done.returncode == 0, done.stderr
    assert "not paused" in done.stdout
    assert "PAUSED" not in telecoder("workers", env=env).stderr
