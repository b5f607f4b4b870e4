"""Fencing: a worker that lost its lease writes nothing — in the store, and end to end with a
real worker paused (SIGSTOP) past its lease while another takes the session over."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from telecoder.domain import EventKind, FailureKind, NewEvent, NewSession, SessionStatus
from telecoder.errors import LeaseLost
from telecoder.store import Outcome, Store, open_store
from telecoder.store.schema import attempts, events, sessions
from tests.cli import telecoder, wait_for
from tests.conftest import PG_ADMIN_URL, GitRepo
from tests.processes import with_marker
from tests.procs import WorkerProcs, fast_env, show, worker_processes
from tests.procs import events as session_events


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


async def snapshot(store: Store) -> dict[str, Any]:
    async with store.db.read() as conn:
        return {
            name: sorted(tuple(r) for r in (await conn.execute(select(table))).all())
            for name, table in (("sessions", sessions), ("attempts", attempts), ("events", events))
        }


async def take_over(db_url: str, session_id: str) -> tuple[Store, Store, Any, Any]:
    """Worker "a" claims with a short lease and falls silent; "b" recovers and claims it."""
    a = await open_store(db_url, lease_seconds=0.3)
    b = await open_store(db_url, lease_seconds=30)
    first = await a.queue.claim("a")
    assert first is not None
    assert first.lease.attempt == 1
    await asyncio.sleep(0.4)
    assert await b.queue.recover_expired() == [session_id]
    queued = await b.sessions.get(session_id)
    assert queued.status == SessionStatus.QUEUED
    await asyncio.sleep(max(0.0, queued.available_at - time.time()) + 0.01)
    second = await b.queue.claim("b")
    assert second is not None
    assert second.lease.attempt == 2
    return a, b, first, second


async def test_every_write_of_a_lost_lease_is_refused_and_changes_nothing(db_url: str):
    setup = await open_store(db_url)
    new = await setup.sessions.create(NewSession(repo="/r", prompt="p", engine="shell"))
    await setup.close()
    a, b, first, second = await take_over(db_url, new.id)
    try:
        before = await snapshot(b)
        stale = first.lease
        with pytest.raises(LeaseLost):
            await a.queue.heartbeat(stale)
        with pytest.raises(LeaseLost):
            await a.events.append(new.id, [NewEvent(kind=EventKind.OUTPUT, data={})], stale)
        with pytest.raises(LeaseLost):
            await a.queue.record(stale, workspace_path="/zombie")
        with pytest.raises(LeaseLost):
            await a.queue.finish(stale, Outcome(status=SessionStatus.SUCCEEDED))
        with pytest.raises(LeaseLost):
            await a.queue.finish(
                stale,
                Outcome(status=SessionStatus.FAILED, failure_kind=FailureKind.ENGINE_ERROR),
                [NewEvent(kind=EventKind.ERROR, data={"message": "zombie"})],
            )
        assert not await a.queue.release(stale, "zombie shutdown")
        assert await snapshot(b) == before
        # The holder is unaffected.
        done = await b.queue.finish(second.lease, Outcome(status=SessionStatus.SUCCEEDED))
        assert done.status == SessionStatus.SUCCEEDED
    finally:
        await a.close()
        await b.close()


async def test_the_same_worker_id_is_fenced_by_the_attempt_number(db_url: str):
    """A restarted worker keeps its name: the old attempt's writes still fail."""
    store = await open_store(db_url, lease_seconds=30)
    try:
        new = await store.sessions.create(NewSession(repo="/r", prompt="p", engine="shell"))
        first = await store.queue.claim("w")
        assert first is not None
        assert await store.queue.recover_worker("w") == [new.id]  # "w" restarted
        await store.queue.release(first.lease, "never mind")  # refused: returns False
        session = await store.sessions.get(new.id)
        await asyncio.sleep(max(0.0, session.available_at - time.time()) + 0.01)
        second = await store.queue.claim("w")
        assert second is not None
        assert second.lease.attempt == 2
        before = await snapshot(store)
        with pytest.raises(LeaseLost):
            await store.queue.heartbeat(first.lease)
        with pytest.raises(LeaseLost):
            await store.events.append(
                new.id, [NewEvent(kind=EventKind.OUTPUT, data={})], first.lease
            )
        assert await snapshot(store) == before
        (one, two) = await store.sessions.attempts(new.id)
        assert one.interrupted == "crashed"
        assert one.failure_kind == FailureKind.WORKER_LOST
        assert two.status.value == "running"
    finally:
        await store.close()


def in_a_transaction(db_url: str) -> bool:
    """Whether a client holds a transaction open (SQLite: the write lock) right now."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0.2)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()
    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        busy = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')",
            (name,),
        ).fetchone()
    return bool(busy and busy[0])


def pause_between_transactions(pid: int, db_url: str) -> None:
    """SIGSTOP ``pid`` at a moment it holds no transaction open.

    Paused inside one it would hold the SQLite write lock (blocking every writer until it
    resumes) or PostgreSQL row locks (until ``idle_in_transaction_session_timeout``): real,
    but not what this test is about.
    """
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.05)  # a statement already sent finishes meanwhile
        if not in_a_transaction(db_url):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.013)
    raise AssertionError("the worker was always in a transaction")


# --- end to end --------------------------------------------------------------------------------

# Attempt 1 ticks for 60 s (unless stopped); any later attempt is quick.
AGENT = (
    'case "$PWD" in *-1) n=240;; *) n=2;; esac; '
    "for i in $(seq 1 $n); do echo tick $i; sleep 0.25; done; "
    "echo done > result.txt"
)


def test_a_paused_worker_resumes_past_its_lease_and_writes_nothing(
    git_repo: GitRepo, home: Path, db_url: str, worker_procs: WorkerProcs
):
    env = fast_env(home, db_url)
    done = telecoder("run", AGENT, "--repo", str(git_repo.path), "--detach", env=env)
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    a = worker_procs.start(env, "worker-a")
    wait_for(
        lambda: sum(e["kind"] == "output" for e in session_events(session_id, env)) >= 2,
        timeout=30,
        what="worker-a's agent to tick",
    )
    # The sandbox of attempt 1 (its processes have pids of their own namespace: found by the
    # worktree they run in).
    first = f"worktrees/{session_id}-1 "
    pause_between_transactions(a.pid, db_url)  # the worker only: its agent keeps running

    worker_procs.start(env, "worker-b")
    wait_for(
        lambda: (
            show(session_id, env)["worker_id"] == "worker-b"
            or show(session_id, env)["status"] == "succeeded"
        ),
        timeout=30,
        what="worker-b to take the session over",
    )
    before = show(session_id, env)
    first_before = before["attempts"][0]
    assert first_before["status"] == "lost"
    assert first_before["interrupted"] == "crashed"
    logged_before = [e for e in session_events(session_id, env) if e["attempt"] == 1]
    assert with_marker(first), "the paused worker's agent was still running"

    os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: not with_marker(first), timeout=5, what="worker-a to stop its agent")
    final = wait_for(
        lambda: (s := show(session_id, env))["finished_at"] and s, timeout=30, what="the end"
    )
    time.sleep(1.0)  # give worker-a every chance to write something it should not

    assert final["status"] == "succeeded"
    assert final["attempt"] == 2
    after = show(session_id, env)
    assert after["attempts"][0] == first_before, "worker-a wrote to its lost attempt"
    logged = session_events(session_id, env)
    assert [e for e in logged if e["attempt"] == 1] == logged_before, "worker-a wrote events"
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    assert [e["attempt"] for e in logged if e["attempt"]] == sorted(
        e["attempt"] for e in logged if e["attempt"]
    )
    branch = final["branch"]
    commits = git_repo.remote_git("rev-list", f"main..{branch}").splitlines()
    assert commits == [final["result"]["commit"]]
    assert after["attempts"][1]["pushed_sha"] == commits[0]
    assert a.poll() is None, "worker-a should carry on as a worker"
