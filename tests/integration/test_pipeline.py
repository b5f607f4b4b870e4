"""The pipeline's event recorder against a real store."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from telecoder.domain import EventKind, NewSession
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.store import Store
from telecoder.store.schema import sessions


async def test_recorder_writes_in_batches_with_gapless_seq(store: Store) -> None:
    new = NewSession(repo="/r", prompt="p", engine="shell")
    claimed = await store.queue.create_claimed(new, "w1")
    recorder = EventRecorder(store.events, claimed.lease, interval=0.01)
    control = AttemptControl()
    recorder.start(control)
    for i in range(600):  # more than one batch of 256
        recorder.add(EventKind.OUTPUT, {"text": f"line {i}"})
        if i % 100 == 0:
            await asyncio.sleep(0)
    await recorder.close()
    events = await store.events.list(new.id, after=2, limit=10_000)
    assert [e.data["text"] for e in events] == [f"line {i}" for i in range(600)]
    assert [e.seq for e in events] == list(range(3, 603))
    assert {e.attempt for e in events} == {1}
    assert control.reason is None


async def test_closing_the_recorder_keeps_the_batch_being_written(store: Store) -> None:
    new = NewSession(repo="/r", prompt="p", engine="shell")
    claimed = await store.queue.create_claimed(new, "w1")
    recorder = EventRecorder(store.events, claimed.lease, interval=0.01)
    recorder.start(AttemptControl())
    async with store.db.write() as conn:
        # Hold the session's row (and on SQLite the write lock): the flush in flight waits.
        await conn.execute(update(sessions).where(sessions.c.id == new.id).values(updated_at=1.0))
        for i in range(3):
            recorder.add(EventKind.OUTPUT, {"text": f"in flight {i}"})
        await asyncio.sleep(0.1)  # the background flush has taken the batch and waits
        closing = asyncio.create_task(recorder.close())
        await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        await closing
    texts = [e.data.get("text") for e in await store.events.list(new.id)]
    assert texts[-3:] == ["in flight 0", "in flight 1", "in flight 2"]
