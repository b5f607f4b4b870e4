"""The workers table: registration, heartbeats, draining/offline, stale workers, duplicate ids,
restart recovery — in the store on both backends, and with real `telecoder worker` processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from telecoder.domain import NewSession, WorkerState
from telecoder.errors import Conflict
from telecoder.store import Store, open_store
from telecoder.store.migrations import HEAD, script_head
from telecoder.store.schema import FULL_TEXT_OBJECTS, metadata
from tests.cli import telecoder, wait_for
from tests.conftest import GitRepo
from tests.procs import WorkerProcs, events, fast_env, show, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


async def test_migrations_make_the_schema_of_the_models(store: Store):
    assert script_head() == HEAD

    def diff(conn: Any) -> list[Any]:
        def declared(name: str | None, type_: str, parent: object) -> bool:
            return not (name or "").startswith(FULL_TEXT_OBJECTS)  # raw DDL: FTS5, a GIN index

        context = MigrationContext.configure(conn, opts={"include_name": declared})
        return list(compare_metadata(context, metadata))

    async with store.db.read() as conn:
        assert await conn.run_sync(diff) == []


async def test_register_beat_and_sign_off(store: Store):
    host = socket.gethostname()
    reg = await store.workers.register(
        "w1", host=host, pid=os.getpid(), capacity=4, engines=["shell", "codex"]
    )
    assert not reg.restarted_after_crash
    (w,) = await store.workers.list()
    assert (w.id, w.host, w.pid, w.capacity, w.engines) == (
        "w1", host, os.getpid(), 4, ("codex", "shell")
    )  # fmt: skip
    assert w.state == WorkerState.IDLE
    await store.workers.beat("w1", state=WorkerState.WORKING, running=2)
    (w,) = await store.workers.live()
    assert (w.state, w.running) == (WorkerState.WORKING, 2)
    await store.workers.beat("w1", state=WorkerState.DRAINING, running=1)
    assert (await store.workers.live())[0].state == WorkerState.DRAINING
    await store.workers.beat("w1", state=WorkerState.OFFLINE, running=0)
    assert await store.workers.live() == []
    assert (await store.workers.list())[0].state == WorkerState.OFFLINE
    # Signed off cleanly: registering again is no restart after a crash.
    again = await store.workers.register("w1", host=host, pid=os.getpid(), capacity=4, engines=[])
    assert not again.restarted_after_crash


async def test_a_silent_worker_shows_offline(db_url: str):
    store = await open_store(db_url, lease_seconds=0.3)
    try:
        await store.workers.register("w", host="h", pid=1, capacity=1, engines=[])
        assert (await store.workers.list())[0].state == WorkerState.IDLE
        await asyncio.sleep(0.4)
        (w,) = await store.workers.list()
        assert w.state == WorkerState.OFFLINE
        assert w.running == 0
        assert await store.workers.live() == []
    finally:
        await store.close()


async def test_a_live_worker_id_cannot_be_taken(store: Store):
    await store.workers.register("w", host="other-host", pid=1, capacity=1, engines=[])
    with pytest.raises(Conflict, match="in use by pid 1 on other-host"):
        await store.workers.register("w", host=socket.gethostname(), pid=2, capacity=1, engines=[])
    # On this host, under a live process (ours): taken as well.
    host = socket.gethostname()
    await store.workers.register("v", host=host, pid=os.getpid(), capacity=1, engines=[])
    with pytest.raises(Conflict):
        await store.workers.register(
            "v", host=host, pid=os.getpid() + 10**6, capacity=1, engines=[]
        )


async def test_a_dead_process_of_this_host_is_a_restart(store: Store):
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    host = socket.gethostname()
    await store.workers.register("w", host=host, pid=dead.pid, capacity=1, engines=[])
    new = await store.sessions.create(NewSession(repo="/r", prompt="p", engine="shell"))
    assert await store.queue.claim("w") is not None
    reg = await store.workers.register("w", host=host, pid=os.getpid(), capacity=1, engines=[])
    assert reg.restarted_after_crash
    assert await store.queue.recover_worker("w") == [new.id]
    (attempt,) = await store.sessions.attempts(new.id)
    assert attempt.interrupted == "crashed"
    assert "restarted" in (attempt.error or "")


# --- real worker processes ---------------------------------------------------------------------


def workers_json(env: dict[str, str], *args: str) -> dict[str, dict[str, Any]]:
    done = telecoder("workers", "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return {w["id"]: w for w in json.loads(done.stdout)}


def test_workers_command_follows_real_processes(
    git_repo: GitRepo, home: Path, db_url: str, worker_procs: WorkerProcs
):
    # A drain and a lease long enough for the `workers` command, seconds per call on a busy
    # machine, to see the states in between.
    env = {
        **fast_env(home, db_url, TELECODER_KILL_GRACE_SECONDS="12"),
        "TELECODER_LEASE_SECONDS": "10",
    }
    a = worker_procs.start(env, "worker-a", TELECODER_WORKER_ENGINES="shell")
    b = worker_procs.start(env, "worker-b", TELECODER_WORKER_CONCURRENCY="3")
    seen = wait_for(lambda: len(found := workers_json(env)) == 2 and found, what="both workers")
    assert seen["worker-a"]["state"] == "idle"
    assert seen["worker-a"]["engines"] == ["shell"]
    assert seen["worker-a"]["pid"] == a.pid
    assert seen["worker-a"]["host"] == socket.gethostname()
    assert seen["worker-b"]["capacity"] == 3
    assert "shell" in seen["worker-b"]["engines"]

    # A second process under a live worker's id is refused.
    twin = telecoder("worker", env={**env, "TELECODER_WORKER_ID": "worker-a"}, timeout=30)
    assert twin.returncode == 4
    assert "in use by pid" in twin.stderr

    # An agent that ignores SIGTERM: its worker drains for the kill grace (12 s) on shutdown.
    sid = telecoder(
        "run", "trap '' TERM; sleep 30", "--repo", str(git_repo.path), "--detach", env=env
    ).stdout.strip()
    holder = wait_for(lambda: show(sid, env)["worker_id"], what="a claim")
    wait_for(
        lambda: (
            workers_json(env)[holder]["state"] == "working"
            and workers_json(env)[holder]["running"] == 1
        ),
        what="the holder to report working",
    )
    # SIGTERM: draining while it hands the session back, then offline.
    holder_proc = a if holder == "worker-a" else b
    holder_proc.send_signal(signal.SIGTERM)
    wait_for(lambda: workers_json(env)[holder]["state"] == "draining", what="draining")
    assert holder_proc.wait(30) == 0
    assert workers_json(env)[holder]["state"] == "offline"
    assert workers_json(env, "--live").keys() == {"worker-a", "worker-b"} - {holder}
    # SIGKILL: no sign-off, so it shows offline once its heartbeat is stale (the lease, 10 s).
    other = b if holder_proc is a else a
    other_id = "worker-b" if other is b else "worker-a"
    WorkerProcs.kill(other)
    assert workers_json(env)[other_id]["state"] != "offline"
    wait_for(lambda: workers_json(env)[other_id]["state"] == "offline", timeout=60)
    assert workers_json(env, "--live") == {}
    table = telecoder("workers", env=env)
    assert "offline" in table.stdout
    assert "worker-a" in table.stdout


def test_a_restarted_worker_requeues_what_it_ran_and_show_tells_crashed_from_stopped(
    git_repo: GitRepo, home: Path, worker_procs: WorkerProcs
):
    # A long lease: recovery after the crash comes from the restart, not from the lease.
    env = {**fast_env(home), "TELECODER_LEASE_SECONDS": "60"}
    sid = telecoder(
        "run", "sleep 6; echo done > r.txt", "--repo", str(git_repo.path), "--detach", env=env
    ).stdout.strip()
    a = worker_procs.start(env, "worker-a")
    wait_for(lambda: show(sid, env)["status"] == "running", what="running")
    WorkerProcs.kill(a)
    started = time.monotonic()
    a = worker_procs.start(env, "worker-a")
    wait_for(lambda: show(sid, env)["attempt"] == 2, timeout=60, what="the restart to requeue")
    assert time.monotonic() - started < 50  # before the 60 s lease would expire
    a.send_signal(signal.SIGTERM)  # the second attempt is handed back on purpose
    assert a.wait(15) == 0
    worker_procs.start(env, "worker-b")
    final = wait_for(lambda: (s := show(sid, env))["finished_at"] and s, timeout=90)
    assert final["status"] == "succeeded"
    assert [(x["status"], x["interrupted"]) for x in final["attempts"]] == [
        ("lost", "crashed"),
        ("released", "stopped"),
        ("succeeded", None),
    ]
    assert "restarted" in final["attempts"][0]["error"]
    statuses = [e["data"] for e in events(sid, env) if e["kind"] == "status"]
    assert [s.get("interrupted") for s in statuses if s["status"] == "queued"] == [
        None,
        "crashed",
        "stopped",
    ]
    assert final["max_attempts"] == 3
    text = telecoder("show", sid, env=env).stdout
    assert "lost (crashed)" in text
    assert "released (stopped)" in text
