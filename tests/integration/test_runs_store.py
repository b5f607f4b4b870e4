"""Runs in the store: sessions and dependencies written at once, a cycle refused, dependants
queued or skipped in the transaction that ends what they wait for, the run's status."""

from __future__ import annotations

import pytest

from telecoder.domain import (
    After,
    Dependency,
    FailureKind,
    NewRun,
    NewSession,
    RunKind,
    RunStatus,
    SessionStatus,
)
from telecoder.errors import BadInput
from telecoder.store import Outcome, Store


def task(key: str) -> NewSession:
    return NewSession(repo="/r", prompt=f"do {key}", engine="shell", task_key=key)


async def finish(store: Store, session_id: str, status: SessionStatus) -> None:
    claimed = await store.queue.claim("w", only=session_id)
    assert claimed is not None, session_id
    failure = FailureKind.ENGINE_ERROR if status == SessionStatus.FAILED else None
    outcome = Outcome(status=status, failure_kind=failure, retryable=False)
    await store.queue.finish(claimed.lease, outcome)


async def statuses(store: Store, run_id: str) -> dict[str, str]:
    return {s.task_key or s.id: s.status.value for s in await store.runs.sessions(run_id)}


async def test_a_dag_runs_in_order_and_a_failure_skips_what_waits_for_it(store: Store) -> None:
    a, b, c, d = (task(k) for k in "abcd")
    deps = [
        Dependency(session_id=b.id, depends_on=a.id),
        Dependency(session_id=c.id, depends_on=a.id),
        Dependency(session_id=d.id, depends_on=b.id),
        Dependency(session_id=d.id, depends_on=c.id),
    ]
    run, made = await store.runs.create(NewRun(kind=RunKind.PLAN, name="dag"), [a, b, c, d], deps)
    assert {s.run_id for s in made} == {run.id}
    assert await statuses(store, run.id) == {
        "a": "queued", "b": "waiting", "c": "waiting", "d": "waiting"
    }  # fmt: skip
    assert await store.queue.claim("w", only=b.id) is None  # waiting: not claimable
    await finish(store, a.id, SessionStatus.SUCCEEDED)
    assert await statuses(store, run.id) == {
        "a": "succeeded", "b": "queued", "c": "queued", "d": "waiting"
    }  # fmt: skip
    await finish(store, b.id, SessionStatus.FAILED)
    found = await statuses(store, run.id)
    assert (found["d"], found["c"]) == ("skipped", "queued")
    assert (await store.runs.get(run.id)).status == RunStatus.RUNNING  # c still runs
    await finish(store, c.id, SessionStatus.SUCCEEDED)
    ended = await store.runs.get(run.id)
    assert ended.status == RunStatus.FAILED
    assert ended.finished_at is not None
    skipped = await store.sessions.get(d.id)
    assert skipped.error is not None
    assert b.id in skipped.error


async def test_after_any_runs_whatever_the_dependency_did(store: Store) -> None:
    a, b = task("a"), task("b")
    dep = Dependency(session_id=b.id, depends_on=a.id, after=After.ANY)
    run, _ = await store.runs.create(NewRun(kind=RunKind.PLAN), [a, b], [dep])
    await finish(store, a.id, SessionStatus.FAILED)
    assert (await statuses(store, run.id))["b"] == "queued"


async def test_cancelling_a_dependency_skips_its_dependants(store: Store) -> None:
    a, b, c = task("a"), task("b"), task("c")
    deps = [
        Dependency(session_id=b.id, depends_on=a.id),
        Dependency(session_id=c.id, depends_on=b.id),
    ]
    run, _ = await store.runs.create(NewRun(kind=RunKind.PLAN), [a, b, c], deps)
    await store.sessions.cancel(a.id)
    assert await statuses(store, run.id) == {"a": "cancelled", "b": "skipped", "c": "skipped"}
    assert (await store.runs.get(run.id)).status == RunStatus.CANCELLED


async def test_a_fanout_of_many_sessions_is_one_write_and_succeeds_when_all_do(
    store: Store,
) -> None:
    many = [task(f"repo{i}") for i in range(100)]
    run, made = await store.runs.create(NewRun(kind=RunKind.FANOUT), many)
    assert len(made) == 100
    assert [s.task_key for s in made] == [f"repo{i}" for i in range(100)]  # in the order given
    assert {s.status for s in made} == {SessionStatus.QUEUED}
    for session in made:
        await finish(store, session.id, SessionStatus.SUCCEEDED)
    assert (await store.runs.get(run.id)).status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("edges", [[("a", "b"), ("b", "a")], [("a", "a")], [("a", "x")]])
async def test_a_cycle_or_a_stranger_is_refused_and_nothing_is_written(
    store: Store, edges: list[tuple[str, str]]
) -> None:
    a, b = task("a"), task("b")
    ids = {"a": a.id, "b": b.id, "x": "nosuchsession"}
    deps = [Dependency(session_id=ids[x], depends_on=ids[y]) for x, y in edges]
    with pytest.raises(BadInput):
        await store.runs.create(NewRun(kind=RunKind.PLAN), [a, b], deps)
    assert await store.runs.list() == []
    assert (await store.sessions.list()).sessions == []
