"""A rate-limited attempt is requeued not before the endpoint opens, does not count against
max_attempts, and has a cap of its own (retry.RATE_LIMITED_REQUEUES)."""

from __future__ import annotations

import time

from sqlalchemy import update

from telecoder import retry
from telecoder.domain import FailureKind, NewSession, SessionStatus
from telecoder.store import Outcome, Store
from telecoder.store.schema import sessions


def limited(until: float | None) -> Outcome:
    return Outcome(
        status=SessionStatus.FAILED,
        failure_kind=FailureKind.RATE_LIMITED,
        error="rate limited",
        not_before=until,
    )


async def due(store: Store, session_id: str) -> None:
    async with store.db.write() as conn:
        await conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(available_at=0)
        )


async def test_rate_limited_attempts_wait_for_the_endpoint_and_do_not_count(store: Store) -> None:
    created = await store.sessions.create(
        NewSession(repo="/src/repo", prompt="echo hi", engine="shell", max_attempts=1)
    )
    for n in range(retry.RATE_LIMITED_REQUEUES):
        claimed = await store.queue.claim("w1")
        assert claimed is not None
        until = time.time() + 42
        done = await store.queue.finish(claimed.lease, limited(until))
        assert done.status == SessionStatus.QUEUED, n  # max_attempts=1, yet requeued
        assert done.available_at >= until - 0.01
        await due(store, created.id)
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    done = await store.queue.finish(claimed.lease, limited(None))
    assert done.status == SessionStatus.DEAD
    assert done.failure_kind == FailureKind.RATE_LIMITED


async def test_other_failures_still_count(store: Store) -> None:
    created = await store.sessions.create(
        NewSession(repo="/src/repo", prompt="echo hi", engine="shell", max_attempts=2)
    )
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    assert (await store.queue.finish(claimed.lease, limited(None))).status == SessionStatus.QUEUED
    await due(store, created.id)
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    failed = Outcome(status=SessionStatus.FAILED, failure_kind=FailureKind.STALLED, error="x")
    assert (await store.queue.finish(claimed.lease, failed)).status == SessionStatus.QUEUED
    await due(store, created.id)
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    assert (await store.queue.finish(claimed.lease, failed)).status == SessionStatus.DEAD
