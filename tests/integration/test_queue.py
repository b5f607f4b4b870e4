"""The queue on SQLite and PostgreSQL: claim, lease, heartbeat, finish, retry, recovery, release."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from telecoder.domain import (
    AttemptStatus,
    EventKind,
    FailureKind,
    Lease,
    NewSession,
    Result,
    ResultType,
    SessionStatus,
)
from telecoder.errors import LeaseLost
from telecoder.settings import Settings
from telecoder.store import Claimed, Outcome, Store, open_store, store_options
from telecoder.store.queue import Queue
from telecoder.store.schema import attempts, events, sessions

SUCCEEDED = Outcome(status=SessionStatus.SUCCEEDED)


def new(prompt: str = "echo hi", **kw: Any) -> NewSession:
    kw.setdefault("engine", "shell")
    return NewSession(repo="/src/repo", prompt=prompt, **kw)


async def claim(store: Store, worker: str = "w1", **kw: Any) -> Claimed:
    claimed = await store.queue.claim(worker, **kw)
    assert claimed is not None
    return claimed


async def make_due(store: Store, session_id: str) -> None:
    """Let a session that waits for its backoff be claimed now."""
    async with store.db.write() as conn:
        await conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(available_at=0)
        )


async def count(store: Store, table: Any) -> int:
    async with store.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def wait_expired(store: Store, session_id: str) -> None:
    deadline = time.monotonic() + 5
    while True:
        lease_until = (await store.sessions.get(session_id)).lease_until
        assert lease_until is not None
        if lease_until < time.time():
            return
        assert time.monotonic() < deadline, "the lease never expired"
        await asyncio.sleep(0.01)


async def test_priority_first_then_fifo(store: Store) -> None:
    order = [("p0a", 0), ("p5a", 5), ("p0b", 0), ("low", -1), ("p5b", 5), ("p0c", 0)]
    ids = {}
    for name, priority in order:
        ids[(await store.sessions.create(new(name, priority=priority))).id] = name
    claimed = []
    while (c := await store.queue.claim("w1")) is not None:
        claimed.append(ids[c.session.id])
    assert claimed == ["p5a", "p5b", "p0a", "p0b", "p0c", "low"]


async def test_a_session_is_not_claimed_before_it_is_available(store: Store) -> None:
    later = await store.sessions.create(new("later", priority=9))
    now = await store.sessions.create(new("now"))
    async with store.db.write() as conn:
        await conn.execute(
            update(sessions).where(sessions.c.id == later.id).values(available_at=time.time() + 60)
        )
    assert (await claim(store)).session.id == now.id
    assert await store.queue.claim("w1") is None
    await make_due(store, later.id)
    assert (await claim(store)).session.id == later.id


async def test_claim_creates_an_attempt_with_a_lease(store: Store) -> None:
    created = await store.sessions.create(new())
    before = time.time()
    claimed = await claim(store, "worker-a")
    session, lease = claimed.session, claimed.lease
    assert lease == Lease(session_id=created.id, attempt=1, worker_id="worker-a")
    assert session.status == SessionStatus.RUNNING
    assert session.attempt == 1
    assert session.worker_id == "worker-a"
    assert session.started_at is not None
    assert session.started_at >= before
    assert session.lease_until == pytest.approx(time.time() + store.queue.lease_seconds, abs=1)
    assert await store.sessions.get(created.id) == session
    [attempt] = await store.sessions.attempts(created.id)
    assert (attempt.number, attempt.worker_id, attempt.status) == (
        1,
        "worker-a",
        AttemptStatus.RUNNING,
    )
    assert attempt.branch == created.branch
    assert attempt.lease_until == session.lease_until
    last = (await store.events.list(created.id))[-1]
    assert last.kind == EventKind.STATUS
    assert last.data == {"status": "running", "attempt": 1, "worker": "worker-a"}
    assert last.attempt == 1
    assert await store.queue.claim("worker-b") is None


async def test_create_claimed_is_never_seen_queued_by_others(store: Store) -> None:
    request = new()
    claimed = await store.queue.create_claimed(request, "me")
    assert claimed.session.id == request.id
    assert claimed.session.status == SessionStatus.RUNNING
    assert claimed.lease.attempt == 1
    assert await store.queue.claim("other") is None
    kinds = [e.data["status"] for e in await store.events.list(request.id)]
    assert kinds == ["queued", "running"]


async def test_heartbeat_renews_the_lease(store: Store) -> None:
    await store.sessions.create(new())
    claimed = await claim(store)
    [first] = await store.sessions.attempts(claimed.session.id)
    await asyncio.sleep(0.05)
    beat = await store.queue.heartbeat(claimed.lease)
    assert beat.cancel_requested is False
    assert claimed.session.lease_until is not None
    assert beat.lease_until > claimed.session.lease_until
    session = await store.sessions.get(claimed.session.id)
    assert session.lease_until == beat.lease_until
    [renewed] = await store.sessions.attempts(claimed.session.id)
    assert renewed.lease_until == beat.lease_until
    assert renewed.heartbeat_at > first.heartbeat_at


async def _snapshot(store: Store, session_id: str) -> tuple[Any, ...]:
    return (
        await store.sessions.get(session_id),
        await store.sessions.attempts(session_id),
        await count(store, events),
    )


async def _assert_fenced(store: Store, lease: Lease) -> None:
    """Every write with ``lease`` raises LeaseLost and changes nothing."""
    before = await _snapshot(store, lease.session_id)
    with pytest.raises(LeaseLost):
        await store.queue.heartbeat(lease)
    with pytest.raises(LeaseLost):
        await store.queue.record(lease, workspace_path="/elsewhere", pushed_sha="f" * 40)
    with pytest.raises(LeaseLost):
        await store.events.append(lease.session_id, [_output("should not be written")], lease=lease)
    with pytest.raises(LeaseLost):
        await store.queue.finish(lease, SUCCEEDED, [_output("nor this")])
    assert await store.queue.release(lease, "stale") is False
    assert await _snapshot(store, lease.session_id) == before


def _output(text: str) -> Any:
    from telecoder.domain import NewEvent

    return NewEvent(kind=EventKind.OUTPUT, data={"text": text})


async def test_writes_with_a_stale_lease_write_nothing(store: Store) -> None:
    await store.sessions.create(new())
    claimed = await claim(store, "w1")
    lease = claimed.lease
    await _assert_fenced(store, Lease(session_id=lease.session_id, attempt=2, worker_id="w1"))
    await _assert_fenced(store, Lease(session_id=lease.session_id, attempt=1, worker_id="w2"))
    # The rightful holder still writes.
    await store.queue.record(lease, workspace_path="/wt")
    assert await store.events.append(lease.session_id, [_output("ok")], lease=lease) > 0
    await store.queue.finish(lease, SUCCEEDED)
    await _assert_fenced(store, lease)  # after finish
    [attempt] = await store.sessions.attempts(lease.session_id)
    assert attempt.workspace_path == "/wt"
    assert attempt.pushed_sha is None


async def test_finish_succeeded(store: Store) -> None:
    created = await store.sessions.create(new())
    claimed = await claim(store)
    result = Result(type=ResultType.BRANCH, branch=created.branch, commit="c" * 40)
    done = await store.queue.finish(
        claimed.lease,
        Outcome(
            status=SessionStatus.SUCCEEDED,
            result=result,
            cost_usd=0.25,
            input_tokens=100,
            output_tokens=20,
            exit_code=0,
        ),
        [_output("final words")],
    )
    assert done.status == SessionStatus.SUCCEEDED
    assert done.result == result
    assert (done.cost_usd, done.input_tokens, done.output_tokens) == (0.25, 100, 20)
    assert done.finished_at is not None
    assert (done.worker_id, done.lease_until) == (None, None)
    assert await store.sessions.get(created.id) == done
    [attempt] = await store.sessions.attempts(created.id)
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert (attempt.commit_sha, attempt.exit_code) == ("c" * 40, 0)
    assert attempt.finished_at is not None
    tail = (await store.events.list(created.id))[-2:]
    assert [e.data for e in tail] == [{"text": "final words"}, {"status": "succeeded"}]
    assert all(e.attempt == 1 for e in tail)
    assert await store.queue.claim("w1") is None


async def test_finish_failed_permanently(store: Store) -> None:
    created = await store.sessions.create(new())
    claimed = await claim(store)
    done = await store.queue.finish(
        claimed.lease,
        Outcome(
            status=SessionStatus.FAILED,
            failure_kind=FailureKind.ENGINE_ERROR,
            error="exit 3: boom",
            exit_code=3,
        ),
    )
    assert done.status == SessionStatus.FAILED
    assert (done.failure_kind, done.error) == (FailureKind.ENGINE_ERROR, "exit 3: boom")
    assert done.finished_at is not None
    [attempt] = await store.sessions.attempts(created.id)
    assert (attempt.status, attempt.failure_kind, attempt.exit_code) == (
        AttemptStatus.FAILED,
        FailureKind.ENGINE_ERROR,
        3,
    )
    last = (await store.events.list(created.id))[-1]
    assert last.data == {
        "status": "failed",
        "failure_kind": "engine_error",
        "error": "exit 3: boom",
    }


TRANSIENT = Outcome(
    status=SessionStatus.FAILED, failure_kind=FailureKind.WORKSPACE_ERROR, error="fetch failed"
)


async def test_transient_failure_is_retried_after_a_backoff(store: Store) -> None:
    created = await store.sessions.create(new())
    claimed = await claim(store)
    before = time.time()
    done = await store.queue.finish(claimed.lease, TRANSIENT)
    assert done.status == SessionStatus.QUEUED
    assert done.failure_kind == FailureKind.WORKSPACE_ERROR
    assert done.finished_at is None
    assert done.available_at >= before + 1.5  # base 2 s, -25 % at most
    assert done.available_at <= time.time() + 2.5
    last = (await store.events.list(created.id))[-1]
    assert last.data["status"] == "queued"
    assert last.data["retry_in"] == pytest.approx(done.available_at - before, abs=0.5)
    assert await store.queue.claim("w1") is None  # not before its time
    await make_due(store, created.id)
    again = await claim(store, "w2")
    assert again.lease.attempt == 2
    assert again.session.error is None
    assert again.session.failure_kind is None
    first, second = await store.sessions.attempts(created.id)
    assert (first.number, first.status, first.worker_id) == (1, AttemptStatus.FAILED, "w1")
    assert first.error == "fetch failed"
    assert (second.number, second.status, second.worker_id) == (2, AttemptStatus.RUNNING, "w2")


async def test_the_retry_backoff_is_the_setting(db_url: str) -> None:
    """``TELECODER_RETRY_BACKOFF_SECONDS`` (through ``store_options``): the first retry waits
    about that long, for a finished attempt and for one whose worker died."""
    settings = Settings(home=Path("/nonexistent"), database_url=db_url, retry_backoff_seconds=30)
    store = await open_store(db_url, **store_options(settings))
    try:
        finished = await store.sessions.create(new())
        before = time.time()
        done = await store.queue.finish((await claim(store)).lease, TRANSIENT)
        assert before + 22.5 <= done.available_at <= time.time() + 37.5
        lost = await store.sessions.create(new())
        await claim(store, "w9", only=lost.id)
        before = time.time()
        assert await store.queue.recover_worker("w9") == [lost.id]
        recovered = await store.sessions.get(lost.id)
        assert before + 22.5 <= recovered.available_at <= time.time() + 37.5
        assert finished.id != lost.id
    finally:
        await store.close()


async def test_dead_after_max_attempts(store: Store) -> None:
    created = await store.sessions.create(new(max_attempts=2))
    claimed = await claim(store)
    assert (await store.queue.finish(claimed.lease, TRANSIENT)).status == SessionStatus.QUEUED
    await make_due(store, created.id)
    claimed = await claim(store)
    done = await store.queue.finish(claimed.lease, TRANSIENT)
    assert done.status == SessionStatus.DEAD
    assert done.finished_at is not None
    assert [a.status for a in await store.sessions.attempts(created.id)] == [
        AttemptStatus.FAILED,
        AttemptStatus.FAILED,
    ]
    await make_due(store, created.id)
    assert await store.queue.claim("w1") is None


async def test_recover_expired_requeues_with_worker_lost(store: Store) -> None:
    quick = Queue(store.db, lease_seconds=0.05)
    created = await store.sessions.create(new())
    bystander = await store.sessions.create(new("keeps its lease"))
    lost = await quick.claim("gone")
    held = await claim(store, "alive")
    assert lost is not None
    assert lost.session.id == created.id
    assert held.session.id == bystander.id
    await wait_expired(store, created.id)
    assert await store.queue.recover_expired() == [created.id]
    session = await store.sessions.get(created.id)
    assert session.status == SessionStatus.QUEUED
    assert session.failure_kind == FailureKind.WORKER_LOST
    assert session.worker_id is None
    assert session.available_at > time.time()
    [attempt] = await store.sessions.attempts(created.id)
    assert (attempt.status, attempt.failure_kind) == (AttemptStatus.LOST, FailureKind.WORKER_LOST)
    last = (await store.events.list(created.id))[-1]
    assert last.kind == EventKind.STATUS
    assert last.data["status"] == "queued"
    assert last.data["failure_kind"] == "worker_lost"
    assert "gone" in last.data["error"]
    assert (await store.sessions.get(bystander.id)).status == SessionStatus.RUNNING
    # The lost worker, should it wake up, can write nothing.
    await _assert_fenced(store, lost.lease)
    # Another worker takes it up as attempt 2.
    await make_due(store, created.id)
    assert (await claim(store, "w2")).lease.attempt == 2


async def test_recover_expired_at_max_attempts_is_dead(store: Store) -> None:
    quick = Queue(store.db, lease_seconds=0.05)
    created = await store.sessions.create(new(max_attempts=1))
    assert await quick.claim("gone") is not None
    await wait_expired(store, created.id)
    assert await store.queue.recover_expired() == [created.id]
    session = await store.sessions.get(created.id)
    assert session.status == SessionStatus.DEAD
    assert session.finished_at is not None
    assert (await store.events.list(created.id))[-1].data["status"] == "dead"


async def test_release_requeues_without_using_up_an_attempt(store: Store) -> None:
    created = await store.sessions.create(new(max_attempts=2))
    claimed = await claim(store)
    assert await store.queue.release(claimed.lease, "the worker shut down") is True
    session = await store.sessions.get(created.id)
    assert session.status == SessionStatus.QUEUED
    assert session.available_at <= time.time()
    assert session.worker_id is None
    [released] = await store.sessions.attempts(created.id)
    assert released.status == AttemptStatus.RELEASED
    assert (await store.events.list(created.id))[-1].data == {
        "status": "queued",
        "reason": "the worker shut down",
        "interrupted": "stopped",  # on purpose, not a crash
    }
    # Claimable at once, as attempt 2; a transient failure of it is attempt 1 of 2: retried.
    claimed = await claim(store)
    assert claimed.lease.attempt == 2
    assert (await store.queue.finish(claimed.lease, TRANSIENT)).status == SessionStatus.QUEUED
    await make_due(store, created.id)
    claimed = await claim(store)
    assert (await store.queue.finish(claimed.lease, TRANSIENT)).status == SessionStatus.DEAD


async def test_claim_only_the_engines_a_worker_has(store: Store) -> None:
    shell = await store.sessions.create(new(priority=5))
    codex = await store.sessions.create(new(engine="codex"))
    assert await store.queue.claim("w1", engines=[]) is None
    assert await store.queue.claim("w1", engines=["aider"]) is None
    assert (await claim(store, engines=["codex", "aider"])).session.id == codex.id
    assert await store.queue.claim("w1", engines=["codex"]) is None
    assert (await claim(store, engines=None)).session.id == shell.id


# --- several worker processes racing for one queue --------------------------------------------

_CLAIMER = """
import asyncio, json, os, sys, time
from pathlib import Path
from telecoder.domain import SessionStatus
from telecoder.store import Outcome, open_store

url, name, ready, go = sys.argv[1:5]

async def loop(store, worker):
    claimed = []
    while (c := await store.queue.claim(worker)) is not None:
        claimed.append([c.session.id, c.lease.attempt, worker])
        await store.queue.finish(c.lease, Outcome(status=SessionStatus.SUCCEEDED))
    return claimed

async def main():
    store = await open_store(url, migrate=False, lease_seconds=120)
    try:
        Path(ready).touch()
        deadline = time.monotonic() + 60
        while not os.path.exists(go):
            assert time.monotonic() < deadline, "never told to go"
            await asyncio.sleep(0.002)
        results = await asyncio.gather(loop(store, name + "/a"), loop(store, name + "/b"))
    finally:
        await store.close()
    print(json.dumps([c for r in results for c in r]))

asyncio.run(main())
"""


async def test_worker_processes_claim_each_session_exactly_once(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    total, processes = 300, 4
    created = {(await store.sessions.create(new(f"task {i}"))).id for i in range(total)}
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CLAIMER,
            db_url,
            f"p{i}",
            str(sync / f"ready{i}"),
            str(sync / "go"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(processes)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(sync.glob("ready*"))) < processes:
            assert all(p.returncode is None for p in procs), "a claimer died before the start"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        (sync / "go").touch()
        claims: list[list[Any]] = []
        async with asyncio.timeout(90):
            for proc in procs:
                out, err = await proc.communicate()
                assert proc.returncode == 0, err.decode()
                claims.extend(json.loads(out))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    claimed_ids = [c[0] for c in claims]
    assert len(claimed_ids) == total
    assert set(claimed_ids) == created  # each exactly once
    assert {c[1] for c in claims} == {1}
    assert len({c[2].split("/")[0] for c in claims}) >= 2, "the processes did not race"
    assert await count(store, attempts) == total
    async with store.db.read() as conn:
        rows = (await conn.execute(select(sessions.c.status, sessions.c.attempt))).all()
        numbers = (await conn.execute(select(attempts.c.number).distinct())).scalars().all()
    assert {(r.status, r.attempt) for r in rows} == {("succeeded", 1)}
    assert list(numbers) == [1]


async def test_one_branch_has_one_writer_even_when_claims_race(db_url: str) -> None:
    """Two workers (own connections) claim at once two sessions of one branch: one runs, the
    other waits queued until the branch is free (PostgreSQL: the claims' subqueries cannot
    see each other; an advisory lock per branch orders them)."""
    first, second = await open_store(db_url, lease_seconds=5), await open_store(db_url)
    try:
        for round_ in range(8):
            branch = f"telecoder/pr-{round_}"
            for _ in range(2):
                await first.sessions.create(new(branch=branch))
            got = await asyncio.gather(first.queue.claim("w1"), second.queue.claim("w2"))
            running = [c for c in got if c is not None]
            assert len(running) == 1, got
            await first.queue.finish(running[0].lease, SUCCEEDED)
            after = await second.queue.claim("w2")
            assert after is not None
            assert after.session.branch == branch
            await second.queue.finish(after.lease, SUCCEEDED)
    finally:
        await first.close()
        await second.close()
