"""Operating runs in the store (SQLite and PostgreSQL): retry-failed re-queues what failed and
re-waits what it skipped in one transaction, keeping the history; cancel ends what has not
started and flags what runs; the summary adds up the sessions."""

from __future__ import annotations

import pytest

from telecoder import runs
from telecoder.domain import (
    Dependency,
    FailureKind,
    NewRun,
    NewSession,
    Result,
    ResultType,
    RunKind,
    RunStatus,
    SessionStatus,
)
from telecoder.errors import Conflict, SessionNotFound
from telecoder.store import Outcome, Store


def task(key: str) -> NewSession:
    return NewSession(repo="/r", prompt=f"do {key}", engine="shell", task_key=key, max_attempts=1)


async def finish(
    store: Store, session_id: str, status: SessionStatus, *, cost: float = 0.0, pr: str = ""
) -> None:
    claimed = await store.queue.claim("w", only=session_id)
    assert claimed is not None, session_id
    failure = FailureKind.ENGINE_ERROR if status == SessionStatus.FAILED else None
    result = Result(type=ResultType.BRANCH, branch="b", pr_url=pr) if pr else None
    outcome = Outcome(
        status=status,
        failure_kind=failure,
        retryable=False,
        cost_usd=cost,
        input_tokens=10,
        output_tokens=5,
        result=result,
    )
    await store.queue.finish(claimed.lease, outcome)


async def statuses(store: Store, run_id: str) -> dict[str, str]:
    return {s.task_key or s.id: s.status.value for s in await store.runs.sessions(run_id)}


async def diamond(store: Store) -> tuple[str, dict[str, str]]:
    a, b, c, d = (task(k) for k in "abcd")
    deps = [
        Dependency(session_id=b.id, depends_on=a.id),
        Dependency(session_id=c.id, depends_on=a.id),
        Dependency(session_id=d.id, depends_on=b.id),
        Dependency(session_id=d.id, depends_on=c.id),
    ]
    run, _ = await store.runs.create(NewRun(kind=RunKind.PLAN, name="dag"), [a, b, c, d], deps)
    return run.id, {"a": a.id, "b": b.id, "c": c.id, "d": d.id}


async def test_retry_failed_requeues_the_failure_and_rewaits_what_it_skipped(
    store: Store,
) -> None:
    run_id, ids = await diamond(store)
    await finish(store, ids["a"], SessionStatus.SUCCEEDED, cost=0.25)
    await finish(store, ids["b"], SessionStatus.FAILED, cost=0.5)
    await finish(store, ids["c"], SessionStatus.SUCCEEDED, cost=0.25, pr="https://forge/pr/3")
    assert await statuses(store, run_id) == {
        "a": "succeeded", "b": "failed", "c": "succeeded", "d": "skipped"
    }  # fmt: skip
    assert (await store.runs.get(run_id)).status == RunStatus.FAILED

    run, again = await runs.retry_failed(store, run_id)
    assert run.status == RunStatus.RUNNING
    assert run.finished_at is None
    assert [s.task_key for s in again] == ["b"]
    assert await statuses(store, run_id) == {
        "a": "succeeded", "b": "queued", "c": "succeeded", "d": "waiting"
    }  # fmt: skip
    b = await store.sessions.get(ids["b"])
    assert (b.attempt, b.max_attempts, b.error, b.finished_at) == (1, 2, None, None)
    told = [e.data for e in await store.events.list(ids["b"]) if e.kind.value == "status"]
    assert [t["status"] for t in told] == ["waiting", "queued", "running", "failed", "queued"]
    assert told[-1]["retried"] == "failed"
    d_told = [e.data for e in await store.events.list(ids["d"]) if e.kind.value == "status"]
    assert [t["status"] for t in d_told] == ["waiting", "skipped", "waiting"]

    await finish(store, ids["b"], SessionStatus.SUCCEEDED, cost=0.5)
    assert (await statuses(store, run_id))["d"] == "queued"
    await finish(store, ids["d"], SessionStatus.SUCCEEDED)
    done = await store.runs.get(run_id)
    assert done.status == RunStatus.SUCCEEDED
    with pytest.raises(Conflict):
        await runs.retry_failed(store, run_id)  # nothing failed

    data = await runs.load(store, run_id)
    t = data["totals"]
    assert t["statuses"] == {"succeeded": 4}
    assert t["cost_usd"] == pytest.approx(1.5)
    assert (t["input_tokens"], t["output_tokens"]) == (50, 25)
    assert t["pr_urls"] == ["https://forge/pr/3"]
    shown = {s["task_key"]: s for s in data["sessions"]}
    assert sorted(shown["d"]["depends_on"]) == sorted([ids["b"], ids["c"]])
    assert shown["c"]["pr_url"] == "https://forge/pr/3"
    drawn = runs.layers(await store.runs.sessions(run_id), await store.runs.dependencies(run_id))
    assert [sorted(n.session.task_key or "" for n in layer) for layer in drawn] == [
        ["a"],
        ["b", "c"],
        ["d"],
    ]


async def test_cancel_ends_what_waits_and_flags_what_runs(store: Store) -> None:
    run_id, ids = await diamond(store)
    running = await store.queue.claim("w", only=ids["a"])
    assert running is not None
    run, touched = await runs.cancel_run(store, run_id)
    assert run.status == RunStatus.RUNNING  # a still runs until its worker stops it
    assert {s.task_key: s.status.value for s in touched} == {
        "b": "cancelled", "c": "cancelled", "d": "cancelled", "a": "running"
    }  # fmt: skip
    assert (await store.sessions.get(ids["a"])).cancel_requested
    outcome = Outcome(status=SessionStatus.CANCELLED, failure_kind=FailureKind.CANCELLED)
    await store.queue.finish(running.lease, outcome)
    assert (await store.runs.get(run_id)).status == RunStatus.CANCELLED
    with pytest.raises(Conflict):
        await runs.cancel_run(store, run_id)

    # Retried: everything cancelled runs again, from the top.
    run, _ = await runs.retry_failed(store, run_id)
    assert run.status == RunStatus.RUNNING
    assert await statuses(store, run_id) == {
        "a": "queued", "b": "queued", "c": "queued", "d": "queued"
    }  # fmt: skip


async def test_a_run_with_a_success_then_cancelled_ends_cancelled(store: Store) -> None:
    a, b = task("a"), task("b")
    run, _ = await store.runs.create(NewRun(kind=RunKind.FANOUT), [a, b])
    await finish(store, a.id, SessionStatus.SUCCEEDED)
    await runs.cancel_run(store, run.id)
    assert (await store.runs.get(run.id)).status == RunStatus.CANCELLED


async def test_unknown_runs_are_not_found(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        await runs.cancel_run(store, "run_nope")
    with pytest.raises(SessionNotFound):
        await runs.retry_failed(store, "run_nope")
    with pytest.raises(SessionNotFound):
        await runs.load(store, "run_nope")
