"""The event recorder's flushing: a short wait after the first event, a batch at once when
many wait, everything at close, in order; nothing scheduled while nothing comes."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import event as sqla_event
from sqlalchemy import update

from telecoder.domain import EventKind, NewSession
from telecoder.recorder import AttemptControl, EventRecorder, StopReason
from telecoder.store import Claimed, Store
from telecoder.store.schema import sessions


async def claimed(store: Store) -> Claimed:
    await store.sessions.create(NewSession(repo="/src/repo", prompt="x", engine="shell"))
    claim = await store.queue.claim("w1")
    assert claim is not None
    return claim


async def texts(store: Store, session_id: str) -> list[str]:
    return [
        e.data["text"] for e in await store.events.list(session_id) if e.kind == EventKind.OUTPUT
    ]


async def written(store: Store, session_id: str, count: int, within: float) -> float:
    started = time.monotonic()
    while len(await texts(store, session_id)) < count:
        assert time.monotonic() - started < within, await texts(store, session_id)
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_events_are_written_after_a_short_wait_in_order(store: Store) -> None:
    claim = await claimed(store)
    recorder = EventRecorder(store.events, claim.lease, interval=0.3)
    recorder.start(AttemptControl())
    await asyncio.sleep(0.5)  # idle: nothing to write, no timer running
    assert not recorder._soon
    assert recorder._tick is not None
    assert recorder._tick.timer is None
    for i in range(3):
        recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": f"line {i}"})
    assert await written(store, claim.session.id, 3, within=5) < 0.3 + 1
    assert await texts(store, claim.session.id) == ["line 0", "line 1", "line 2"]
    recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": "line 3"})
    await written(store, claim.session.id, 4, within=5)
    await asyncio.sleep(0.1)
    assert not recorder._soon  # written: idle again
    assert recorder._tick is not None
    assert recorder._tick.timer is None
    await recorder.close()


async def test_a_full_buffer_is_written_at_once_and_close_writes_the_rest(store: Store) -> None:
    claim = await claimed(store)
    recorder = EventRecorder(store.events, claim.lease, interval=60)
    recorder.start(AttemptControl())
    for i in range(256):
        recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": str(i)})
    assert await written(store, claim.session.id, 256, within=10) < 10  # not after 60 s
    recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": "last"})
    await recorder.close()
    assert await texts(store, claim.session.id) == [*map(str, range(256)), "last"]


async def test_the_recorders_of_one_tick_write_together_each_on_its_own_lease(
    store: Store,
) -> None:
    a, b, c = [await claimed(store) for _ in range(3)]
    async with store.db.write() as conn:  # c's lease is gone: another worker has c now
        await conn.execute(
            update(sessions).where(sessions.c.id == c.session.id).values(worker_id="w2")
        )
    controls = [AttemptControl() for _ in range(3)]
    recorders = [EventRecorder(store.events, x.lease, interval=0.2) for x in (a, b, c)]
    for recorder, control in zip(recorders, controls, strict=True):
        recorder.start(control)
    commits: list[int] = []
    sqla_event.listen(store.db.engine.sync_engine, "commit", lambda conn: commits.append(1))
    for i, recorder in enumerate(recorders):
        for j in range(2):
            recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": f"{i}.{j}"})
    async with asyncio.timeout(5):
        assert await controls[2].wait() == StopReason.LEASE_LOST
    assert len(commits) == 1  # the three sessions' batches: one transaction
    await written(store, a.session.id, 2, within=5)
    await written(store, b.session.id, 2, within=5)
    assert controls[0].reason is None
    assert controls[1].reason is None
    assert await texts(store, c.session.id) == []
    for recorder in recorders[:2]:
        await recorder.close()
    await recorders[2].cancel()
