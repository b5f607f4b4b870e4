"""The live bus across processes: on PostgreSQL an event append sends a NOTIFY (one per session
and transaction) that wakes the bus of another process at once; a notice carries the events it
tells of, and the bus fans them out with no query; a lost notice is covered by the bus's fallback
poll; the pool settings bound a process's connections. SQLite keeps polling."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from sqlalchemy import text

from telecoder.bus import Bus
from telecoder.domain import EventKind, NewEvent, NewSession
from telecoder.settings import Settings
from telecoder.store import Store, open_store, store_options
from telecoder.store.events import append_events, events_carried
from telecoder.store.notify import EVENTS_CHANNEL, Notice, NoticeKind
from tests.server import until


def line(text: str) -> NewEvent:
    return NewEvent(kind=EventKind.OUTPUT, data={"stream": "stdout", "text": text})


async def next_event(subscription_iter, seconds: float = 10.0):
    async with asyncio.timeout(seconds):
        return await anext(subscription_iter)


async def time_one_append(
    bus: Bus, writer: Store, session_id: str, *, together: bool = False
) -> float:
    """Seconds from an append by ``writer`` (another engine: other connections, as another
    process has) to the event reaching a watcher of ``bus``."""
    after = await writer.events.last_seq(session_id)
    subscription = await bus.subscribe(session_id, after=after)
    # Already waiting when the append is made: a replay of history cannot find the event.
    waiting = asyncio.ensure_future(next_event(aiter(subscription)))
    try:
        await asyncio.sleep(0.2)  # the subscription's own look is over
        assert not waiting.done()
        start = time.monotonic()
        append = writer.events.append_together if together else writer.events.append
        await append(session_id, [line("hello")])
        event = await waiting
        elapsed = time.monotonic() - start
        assert event.data["text"] == "hello"
        return elapsed
    finally:
        waiting.cancel()
        subscription.close()


@pytest.mark.postgres
@pytest.mark.parametrize("together", [False, True], ids=["append", "group-commit"])
async def test_an_append_by_another_process_wakes_the_bus_at_once(pg_url: str, together: bool):
    reader = await open_store(pg_url, migrate=False)
    writer = await open_store(pg_url, migrate=False)
    session = await writer.sessions.create(NewSession(repo="/srv/r", prompt="p", engine="shell"))
    bus = Bus(reader, poll_seconds=0.025, fallback_seconds=30)
    bus.start()
    try:
        await until(lambda: bus.listening)
        elapsed = await time_one_append(bus, writer, session.id, together=together)
        ticks = bus.full_ticks
        # Named sessions only: a woken reader does not look at every session again.
        second = await time_one_append(bus, writer, session.id, together=together)
    finally:
        await bus.close()
        await reader.close()
        await writer.close()
    # Far below the fallback poll (30 s): the notice woke the reader.
    assert elapsed < 2.0
    assert second < 2.0
    assert bus.full_ticks - ticks <= 1  # the second subscription's own look, nothing more


@pytest.mark.postgres
async def test_a_lost_notice_is_covered_by_the_fallback_poll(pg_url: str):
    reader = await open_store(pg_url, migrate=False)
    silent = await open_store(pg_url, migrate=False, event_notices=False)  # sends no NOTIFY
    session = await silent.sessions.create(NewSession(repo="/srv/r", prompt="p", engine="shell"))
    bus = Bus(reader, poll_seconds=0.025, fallback_seconds=0.5)
    bus.start()
    try:
        await until(lambda: bus.listening)
        ticks = bus.ticks
        elapsed = await time_one_append(bus, silent, session.id)
    finally:
        await bus.close()
        await reader.close()
        await silent.close()
    # Not at the 25 ms poll (the bus no longer polls that fast), by the 0.5 s fallback.
    assert elapsed < 3.0
    assert bus.ticks - ticks < 20


@pytest.mark.postgres
async def test_a_notice_carries_its_events_and_a_bare_one_goes_once_a_transaction(pg_url: str):
    store = await open_store(pg_url, migrate=False)
    a = await store.sessions.create(NewSession(repo="/srv/r", prompt="a", engine="shell"))
    b = await store.sessions.create(NewSession(repo="/srv/r", prompt="b", engine="shell"))
    heard: list[Notice] = []
    unsubscribe = store.db.subscribe(heard.append)
    conn = await psycopg.AsyncConnection.connect(store.db.dsn, autocommit=True)
    try:
        await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        async with store.db.write() as c:
            for i in range(3):
                await append_events(c, a.id, None, [line(f"a{i}")])
            for i in range(2):  # too large for a notice (8000 bytes): bare, sent once
                await append_events(c, b.id, None, [line(f"b{i}" + "é" * 4000)])
        payloads = []
        async for notify in conn.notifies(timeout=1.0):
            payloads.append(notify.payload)
    finally:
        unsubscribe()
        await conn.close()
    stored = await store.events.list(a.id)
    await store.close()
    notices = [Notice.decode(p) for p in payloads]
    assert notices == heard  # this process hears what the others do
    assert f"events:{b.id}" in payloads
    carried = {}
    for n in heard:
        assert n.kind == NoticeKind.EVENTS
        found = events_carried(n.session_id, n.body) if n.body else []
        carried.setdefault(n.session_id, []).append([(e.seq, e.data["text"]) for e in found])
    s = stored[-3].seq  # after the session's own first events
    assert carried == {a.id: [[(s, "a0")], [(s + 1, "a1")], [(s + 2, "a2")]], b.id: [[]]}
    by_notice = [e for n in heard if n.session_id == a.id for e in events_carried(a.id, n.body)]
    assert by_notice == stored[-3:]  # the very events the reader would read: id, ts, data


@pytest.mark.postgres
async def test_carried_events_reach_the_streams_without_a_look_and_a_gap_is_read(pg_url: str):
    reader = await open_store(pg_url, migrate=False)
    writer = await open_store(pg_url, migrate=False)
    silent = await open_store(pg_url, migrate=False, event_notices=False)  # sends no NOTIFY
    session = await writer.sessions.create(NewSession(repo="/srv/r", prompt="p", engine="shell"))
    bus = Bus(reader, poll_seconds=0.025, fallback_seconds=30)
    bus.start()
    try:
        await until(lambda: bus.listening)
        after = await writer.events.last_seq(session.id)  # past the session's own first events
        subscription = await bus.subscribe(session.id, after=after)
        events = aiter(subscription)
        await writer.events.append(session.id, [line("first")])
        assert (await next_event(events)).data["text"] == "first"
        ticks = bus.ticks
        for i in range(5):
            await writer.events.append(session.id, [line(f"carried {i}")])
        got = [(await next_event(events)).data["text"] for _ in range(5)]
        assert got == [f"carried {i}" for i in range(5)]
        assert bus.ticks == ticks  # fanned out from the notices: no look, no query
        # A gap: an append nobody was told of, then one that carries only its own event.
        await silent.events.append(session.id, [line("untold")])
        await writer.events.append(session.id, [line("told")])
        got = [(await next_event(events, 5.0)).data["text"] for _ in range(2)]
        assert got == ["untold", "told"]  # the reader read the session, in order
        assert bus.ticks > ticks
        subscription.close()
    finally:
        await bus.close()
        for s in (reader, writer, silent):
            await s.close()


@pytest.mark.postgres
async def test_pool_settings_bound_the_connections(pg_url: str, monkeypatch):
    monkeypatch.setenv("TELECODER_DB_POOL_SIZE", "2")
    monkeypatch.setenv("TELECODER_DB_MAX_OVERFLOW", "1")
    settings = Settings()
    store = await open_store(pg_url, migrate=False, **store_options(settings))
    name = pg_url.rsplit("/", 1)[1]
    peak = 0

    async def slow_read() -> None:
        async with store.db.read() as conn:
            await conn.execute(text("SELECT pg_sleep(0.3)"))

    async def watch(stop: asyncio.Event) -> None:
        nonlocal peak
        async with await psycopg.AsyncConnection.connect(store.db.dsn, autocommit=True) as c:
            while not stop.is_set():
                cur = await c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                    "pg_backend_pid()",
                    (name,),
                )
                row = await cur.fetchone()
                peak = max(peak, int(row[0]) if row else 0)
                await asyncio.sleep(0.02)

    stop = asyncio.Event()
    watching = asyncio.create_task(watch(stop))
    try:
        assert store.db.engine.pool.size() == 2  # type: ignore[attr-defined]
        await asyncio.gather(*(slow_read() for _ in range(8)))  # 8 at once, 3 connections
    finally:
        stop.set()
        await watching
        await store.close()
    assert peak == 3


async def test_sqlite_keeps_polling(tmp_path):
    url = f"sqlite:///{tmp_path / 'telecoder.db'}"
    reader = await open_store(url)
    writer = await open_store(url, migrate=False)  # another engine, as another process
    session = await writer.sessions.create(NewSession(repo="/srv/r", prompt="p", engine="shell"))
    assert reader.listener(lambda _: None) is None
    bus = Bus(reader, poll_seconds=0.05, fallback_seconds=30)
    bus.start()
    try:
        await asyncio.sleep(0.1)
        assert not bus.listening
        elapsed = await time_one_append(bus, writer, session.id)  # by the 50 ms poll
        local = await time_one_append(bus, reader, session.id)  # this process's: at once
    finally:
        await bus.close()
        await reader.close()
        await writer.close()
    assert elapsed < 2.0
    assert local < 2.0
