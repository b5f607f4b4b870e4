"""Lease renewal of a worker's sessions in one batch: what one renewal finds for each lease."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import update

from telecoder.domain import Lease, NewSession, Session
from telecoder.recorder import AttemptControl, StopReason
from telecoder.settings import Settings
from telecoder.store import Claimed, Store
from telecoder.store.schema import sessions
from telecoder.worker import Worker


def new(**kw: Any) -> NewSession:
    return NewSession(repo="/src/repo", prompt="echo hi", engine="shell", **kw)


async def claim(store: Store, worker: str) -> Claimed:
    claimed = await store.queue.claim(worker)
    assert claimed is not None
    return claimed


async def take_away(store: Store, session_id: str, by: str) -> None:
    """The lease runs out and another worker claims the session."""
    async with store.db.write() as conn:
        await conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(lease_until=0)
        )
    assert await store.queue.recover_expired() == [session_id]
    async with store.db.write() as conn:  # no back-off before the retry
        await conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(available_at=0)
        )
    taken = await claim(store, by)
    assert taken.session.id == session_id


async def test_one_renewal_renews_every_lease_and_tells_each_what_it_found(store: Store) -> None:
    for _ in range(3):
        await store.sessions.create(new())
    a, b, c = [await claim(store, "w1") for _ in range(3)]
    await store.sessions.cancel(b.session.id)
    await take_away(store, c.session.id, "w2")
    await asyncio.sleep(0.05)
    beats = await store.queue.renew([a.lease, b.lease, c.lease])
    assert set(beats) == {a.session.id, b.session.id}  # c's lease is w2's now
    assert beats[a.session.id].cancel_requested is False
    assert beats[b.session.id].cancel_requested is True
    for claimed in (a, b):
        assert claimed.session.lease_until is not None
        assert beats[claimed.session.id].lease_until > claimed.session.lease_until
        renewed = await store.sessions.get(claimed.session.id)
        assert renewed.lease_until == beats[claimed.session.id].lease_until
        [attempt] = await store.sessions.attempts(claimed.session.id)
        assert attempt.lease_until == renewed.lease_until
    # w2's lease on c was not touched by w1's renewal, and w2 can renew it.
    assert c.session.id in await store.queue.renew(
        [Lease(session_id=c.session.id, attempt=2, worker_id="w2")]
    )
    assert await store.queue.renew([]) == {}


async def test_a_stale_attempt_number_is_not_renewed(store: Store) -> None:
    await store.sessions.create(new())
    claimed = await claim(store, "w1")
    stale = Lease(session_id=claimed.session.id, attempt=claimed.lease.attempt + 1, worker_id="w1")
    assert await store.queue.renew([stale]) == {}


class Waiting:
    """A runner whose attempts run until they are told to stop; it notes why they stopped."""

    def __init__(self) -> None:
        self.stopped: dict[str, tuple[StopReason, float]] = {}

    async def run(self, session: Session, lease: Lease, control: AttemptControl) -> Session | None:
        reason = await control.wait()
        self.stopped[session.id] = (reason, time.monotonic())
        return None

    async def sweep(self) -> list[str]:
        return []

    async def chats_ended(self, session_ids: list[str]) -> None:
        return None


async def test_a_lost_lease_stops_that_session_only_and_a_cancel_is_seen_within_a_beat(
    store: Store, home: Any
) -> None:
    settings = Settings(home=home, lease_seconds=5, heartbeat_seconds=0.2, worker_id="w1")
    runner = Waiting()
    worker = Worker(settings=settings, store=store, pipeline=runner)
    for _ in range(2):
        await store.sessions.create(new())
    a, b = await claim(store, "w1"), await claim(store, "w1")
    runs = [asyncio.create_task(worker.execute(c)) for c in (a, b)]
    await asyncio.sleep(0.3)
    before = (await store.sessions.get(b.session.id)).lease_until
    await take_away(store, a.session.id, "w2")
    taken = time.monotonic()
    async with asyncio.timeout(5):
        await runs[0]
    reason, at = runner.stopped[a.session.id]
    assert reason == StopReason.LEASE_LOST
    assert at - taken < settings.heartbeat_seconds + 3  # generous: a loaded CI machine
    assert not runs[1].done()
    await asyncio.sleep(0.5)
    renewed = (await store.sessions.get(b.session.id)).lease_until
    assert before is not None
    assert renewed is not None
    assert renewed > before  # b's still renewed
    assert (await store.sessions.get(a.session.id)).worker_id == "w2"  # a's left alone
    await store.sessions.cancel(b.session.id)
    cancelled = time.monotonic()
    async with asyncio.timeout(5):
        await runs[1]
    reason, at = runner.stopped[b.session.id]
    assert reason == StopReason.CANCELLED
    assert at - cancelled < settings.heartbeat_seconds + 3
    assert worker._renewer is None  # the last session gone, no renewal task is left
