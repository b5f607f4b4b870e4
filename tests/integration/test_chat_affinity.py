"""A chat's next turn, and a blocked task's (answered, or its budget raised), is claimed only by
the remote worker that keeps its workspace (its last attempt has no workspace path on the
server), while that worker lives; a chat a local worker ran (its worktree's path recorded) is
anyone's, and so is a task whose last attempt failed or was lost (it starts afresh). Real
SQLite / PostgreSQL."""

from __future__ import annotations

from telecoder.amounts import BudgetChange
from telecoder.domain import FailureKind, Mode, NewSession, SessionStatus, WorkerState
from telecoder.store import Outcome, Store, open_store


async def _chat_waiting(store: Store, worker: str, *, path: str | None) -> str:
    session = await store.sessions.create(
        NewSession(repo="/r", prompt="hello", engine="shell", mode=Mode.CHAT)
    )
    claimed = await store.queue.claim(worker, only=session.id)
    assert claimed is not None
    if path is not None:
        await store.queue.record(claimed.lease, workspace_path=path, base_sha="a" * 40)
    await store.queue.finish(claimed.lease, Outcome(status=SessionStatus.BLOCKED))
    await store.sessions.add_message(session.id, "and now?")
    return session.id


async def _register(store: Store, *ids: str) -> None:
    for worker in ids:
        await store.workers.register(
            worker, host=worker, pid=1, capacity=1, engines=(), remote=True
        )


async def test_a_remote_chats_next_turn_waits_for_its_worker_while_it_lives(store: Store) -> None:
    await _register(store, "far-a", "far-b")
    sid = await _chat_waiting(store, "far-a", path=None)
    assert await store.queue.claim("far-b") is None  # far-a keeps its workspace
    again = await store.queue.claim("far-a")
    assert again is not None
    assert again.session.id == sid
    assert again.session.attempt == 2


async def test_once_its_worker_is_gone_anyone_takes_the_chat(store: Store) -> None:
    await _register(store, "far-a", "far-b")
    sid = await _chat_waiting(store, "far-a", path=None)
    assert await store.queue.claim("far-b") is None
    await store.workers.beat("far-a", state=WorkerState.OFFLINE, running=0)
    taken = await store.queue.claim("far-b")
    assert taken is not None
    assert taken.session.id == sid


async def test_a_chat_whose_worktree_path_is_known_is_anyones(store: Store) -> None:
    await _register(store, "near", "far-b")
    sid = await _chat_waiting(store, "near", path="/wt/x-1")
    taken = await store.queue.claim("far-b")
    assert taken is not None
    assert taken.session.id == sid


async def _task_ended(store: Store, worker: str, outcome: Outcome) -> str:
    new = NewSession(repo="/r", prompt="fix it", engine="shell", max_attempts=3)
    session = await store.sessions.create(new)
    claimed = await store.queue.claim(worker, only=session.id)
    assert claimed is not None
    await store.queue.finish(claimed.lease, outcome)
    return session.id


async def test_a_remote_tasks_answer_waits_for_the_worker_that_asked(store: Store) -> None:
    await _register(store, "far-a", "far-b")
    asked = Outcome(status=SessionStatus.BLOCKED, question="which flag name?")
    sid = await _task_ended(store, "far-a", asked)
    await store.sessions.add_message(sid, "--output")
    assert (await store.sessions.get(sid)).status == SessionStatus.QUEUED
    assert await store.queue.claim("far-b") is None  # far-a keeps its worktree
    again = await store.queue.claim("far-a")
    assert again is not None
    assert (again.session.id, again.session.attempt) == (sid, 2)


async def test_a_remote_tasks_raise_waits_for_its_worker_until_it_is_gone(store: Store) -> None:
    await _register(store, "far-a", "far-b")
    spent = Outcome(status=SessionStatus.BLOCKED, failure_kind=FailureKind.BUDGET_REACHED)
    sid = await _task_ended(store, "far-a", spent)
    await store.budgets.raise_session(sid, BudgetChange(2.0))
    assert (await store.sessions.get(sid)).status == SessionStatus.QUEUED
    assert await store.queue.claim("far-b") is None
    await store.workers.beat("far-a", state=WorkerState.OFFLINE, running=0)
    taken = await store.queue.claim("far-b")
    assert taken is not None
    assert taken.session.id == sid


async def test_a_failed_remote_task_retried_is_anyones(db_url: str, store: Store) -> None:
    fast = await open_store(db_url, lease_seconds=5, retry_backoff_seconds=0)
    try:
        await _register(fast, "far-a", "far-b")
        failed = Outcome(status=SessionStatus.FAILED, failure_kind=FailureKind.WORKSPACE_ERROR)
        sid = await _task_ended(fast, "far-a", failed)
        assert (await fast.sessions.get(sid)).status == SessionStatus.QUEUED  # retried
        taken = await fast.queue.claim("far-b")
        assert taken is not None
        assert taken.session.id == sid
    finally:
        await fast.close()
