"""Live events over a real socket (uvicorn): tail, resume, fan-out, shutdown, and the bus."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import event

from telecoder.bus import Bus
from telecoder.domain import NewSession, SessionStatus
from telecoder.server import create_app
from telecoder.server.routes.events import frame
from tests.server import FakeRun, serving, sse, until


async def queued(store, n: int = 1) -> list[str]:
    ids = []
    for i in range(n):
        session = await store.sessions.create(
            NewSession(repo="/srv/repo", prompt=f"echo {i}", engine="shell")
        )
        ids.append(session.id)
    return ids


async def collect(url: str, *, until_end: bool = True, count: int | None = None, **headers):
    """Read an SSE stream until its end event, or until ``count`` events arrived."""
    frames = []
    async with (
        httpx.AsyncClient(timeout=20) as c,
        c.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        async for frame in sse(response):
            frames.append(frame)
            if count is not None and len(frames) >= count:
                break
    return frames


async def test_a_stream_tails_live_events_until_the_session_ends(settings, store):
    [sid] = await queued(store)
    app = create_app(settings, store)
    async with serving(app) as base:
        reader = asyncio.create_task(collect(f"{base}/api/sessions/{sid}/events"))
        await asyncio.sleep(0.3)  # the reader is connected and has replayed "queued"
        assert not reader.done()
        run = await FakeRun.start(store)
        for i in range(5):
            await run.say(f"live {i}")
            await asyncio.sleep(0.02)
        await run.finish()
        frames = await asyncio.wait_for(reader, 10)
    assert [f.event for f in frames] == ["status", "status", *["output"] * 5, "status", "end"]
    assert [f.id for f in frames[:-1]] == [str(i) for i in range(1, 9)]
    assert [f.json()["data"]["text"] for f in frames[2:7]] == [f"live {i}" for i in range(5)]
    assert frames[-1].json() == {"status": "succeeded"}


async def test_reconnect_with_last_event_id_gets_exactly_what_was_missed(settings, store):
    [sid] = await queued(store)
    app = create_app(settings, store)
    run = await FakeRun.start(store)
    await run.say("a", "b")  # seq 3, 4
    async with serving(app) as base:
        url = f"{base}/api/sessions/{sid}/events"
        first = await collect(url, count=3)  # queued, running, "a": then the client drops
        await run.say("c", "d", "e")  # while nobody listens
        resumer = asyncio.create_task(collect(url, **{"Last-Event-ID": first[-1].id or ""}))
        await asyncio.sleep(0.2)
        await run.say("f")
        await run.finish(SessionStatus.CANCELLED)
        second = await asyncio.wait_for(resumer, 10)
    texts = [f.json()["data"].get("text") for f in second if f.event == "output"]
    assert texts == ["b", "c", "d", "e", "f"]
    seqs = [int(f.id or 0) for f in first + second if f.event != "end"]
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order, no gap


async def test_one_reader_serves_many_watchers(settings, store):
    """50 watchers of one session: the store sees the queries of one reader, not 50."""
    [sid] = await queued(store)
    run = await FakeRun.start(store)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if "FROM events" in statement or "FROM sessions" in statement:
            statements.append(statement)

    async def watch_with(n: int) -> tuple[int, int, list]:
        app = create_app(settings, store)
        after = (await store.events.heads([sid]))[sid].last_seq
        async with serving(app) as base:
            url = f"{base}/api/sessions/{sid}/events?after={after}"
            watchers = [asyncio.create_task(collect(url, count=10)) for _ in range(n)]
            bus = app.state.telecoder.bus
            await until(lambda: bus.watcher_count >= n)
            statements.clear()
            ticks = bus.ticks
            for i in range(10):
                await run.say(f"{n}: line {i}")
                await asyncio.sleep(0.05)
            results = await asyncio.wait_for(asyncio.gather(*watchers), 20)
            return len(statements), bus.ticks - ticks, results

    event.listen(store.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        one_queries, one_ticks, _ = await watch_with(1)
        many_queries, many_ticks, results = await watch_with(50)
    finally:
        event.remove(store.db.engine.sync_engine, "before_cursor_execute", count)
    for frames in results:
        texts = [f.json()["data"].get("text") for f in frames]
        assert texts == [f"50: line {i}" for i in range(10)]
    # The same ten events cost the same queries for 50 watchers as for one: a few per tick of
    # the reader (a slow machine makes more ticks), never per watcher (500 for 50 x 10 events);
    # the notices carry the events, so the ticks are the reader's fallback looks only.
    figures = (one_queries, one_ticks, many_queries, many_ticks)
    assert one_queries <= 3 * one_ticks + 2, figures
    assert many_queries <= 3 * many_ticks + 2, figures


async def test_shutdown_ends_streams_without_an_end_event(settings, store):
    [sid] = await queued(store)
    app = create_app(settings, store)
    async with serving(app) as base:
        reader = asyncio.create_task(collect(f"{base}/api/sessions/{sid}/events"))
        await until(lambda: app.state.telecoder.bus.watcher_count >= 1)
    frames = await asyncio.wait_for(reader, 10)
    assert [f.event for f in frames] == ["status"]  # the queued event, then closed: no "end"


async def test_dashboard_stream_sends_rendered_events(settings, store):
    [sid] = await queued(store)
    app = create_app(settings, store)
    run = await FakeRun.start(store)
    async with serving(app) as base:
        reader = asyncio.create_task(collect(f"{base}/sessions/{sid}/stream?after=2"))
        await asyncio.sleep(0.2)
        await run.say("<script>alert(1)</script>")
        await run.finish()
        frames = await asyncio.wait_for(reader, 10)
    kinds = [f.event for f in frames]
    assert kinds == ["event", "event", "head", "end"]
    assert 'id="ev-3"' in frames[0].data
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in frames[0].data
    assert "<script>" not in frames[0].data
    assert "succeeded" in frames[1].data


async def test_session_list_stream_reports_changes(settings, store):
    app = create_app(settings, store)
    async with (
        serving(app) as base,
        httpx.AsyncClient(timeout=10) as c,
        c.stream("GET", f"{base}/stream/sessions") as response,
    ):
        frames = sse(response)
        first = await asyncio.wait_for(anext(frames), 5)  # the current state
        await queued(store)
        second = await asyncio.wait_for(anext(frames), 5)
    assert first.event == second.event == "changed"
    assert float(second.data) >= float(first.data)


# --- the bus on its own ------------------------------------------------------------------------


async def test_bus_replays_then_tails_and_ends(store):
    [sid] = await queued(store)
    run = await FakeRun.start(store)
    await run.say("before")
    bus = Bus(store, poll_seconds=0.01)
    bus.start()
    try:
        subscription = await bus.subscribe(sid, after=0)
        got = []

        async def read():
            async for e in subscription:
                got.append(e.seq)

        reader = asyncio.create_task(read())
        await run.say("after 1", "after 2")
        await run.finish()
        await asyncio.wait_for(reader, 5)
    finally:
        await bus.close()
    assert got == [1, 2, 3, 4, 5, 6]
    assert not subscription.interrupted
    assert bus.watcher_count == 0


async def test_bus_on_a_finished_session_replays_and_ends(store):
    [sid] = await queued(store)
    await store.sessions.cancel(sid)
    bus = Bus(store, poll_seconds=0.01)
    bus.start()
    try:
        subscription = await bus.subscribe(sid, after=1)
        seqs = [e.seq async for e in subscription]
    finally:
        await bus.close()
    assert seqs == [2]


async def test_next_returns_none_when_quiet_then_the_events_then_ends(store):
    [sid] = await queued(store)
    run = await FakeRun.start(store)
    bus = Bus(store, poll_seconds=0.01)
    bus.start()
    try:
        subscription = await bus.subscribe(sid, after=0)
        replayed = [await subscription.next(0.05), await subscription.next(0.05)]
        assert [e.seq for e in replayed if e is not None] == [1, 2]  # queued, running
        assert await subscription.next(0.05) is None  # quiet: the stream sends a ping
        await run.say("live")
        live = await subscription.next(5)
        assert live is not None
        assert live.seq == 3
        assert live.data["text"] == "live"
        # The frame is encoded once and shared by every stream that sends this event.
        assert frame(live) is frame(replace(live))
        assert b"id: 3" in frame(live)
        await run.finish()
        assert (await subscription.next(5)).seq == 4  # type: ignore[union-attr]
        with pytest.raises(StopAsyncIteration):
            await subscription.next(5)
        with pytest.raises(StopAsyncIteration):  # and stays ended
            await subscription.next(5)
    finally:
        await bus.close()
    assert not subscription.interrupted
    assert bus.watcher_count == 0


async def test_a_watcher_that_falls_behind_is_cut_off(store):
    [sid] = await queued(store)
    run = await FakeRun.start(store)
    bus = Bus(store, poll_seconds=0.01, max_backlog=3)
    bus.start()
    try:
        subscription = await bus.subscribe(sid, after=2)
        stream = aiter(subscription)
        first = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.05)  # replayed nothing, now waits for live events
        await run.say(*[str(i) for i in range(10)])
        await asyncio.sleep(0.2)  # the reader fans out while this watcher reads nothing
        seqs = [(await first).seq] + [e.seq async for e in stream]
    finally:
        await bus.close()
    assert subscription.interrupted
    # What fitted in its backlog, without a gap; the client replays the rest from the store.
    assert seqs == list(range(3, 3 + len(seqs)))
    assert len(seqs) <= 5


@pytest.mark.parametrize("watchers", [1, 3])
async def test_store_heads_and_since(store, watchers):
    ids = await queued(store, watchers)
    heads = await store.events.heads([*ids, "missing"])
    expected = dict.fromkeys(ids, (1, SessionStatus.QUEUED))
    assert {sid: (h.last_seq, h.status) for sid, h in heads.items()} == expected
    found = await store.events.since(dict.fromkeys(ids, (0, 1)))
    assert sorted(e.session_id for e in found) == sorted(ids)
    count, latest = await store.events.last_change()
    assert count == watchers
    assert latest > 0


async def test_watchers_joining_while_the_reader_reads_are_not_ended(store):
    """A session first watched while the reader is between its queries is not taken for gone."""
    ids = await queued(store, 30)
    bus = Bus(store, poll_seconds=0.001)  # the reader is almost always inside a query
    bus.start()
    try:
        subscriptions = []
        for sid in ids:
            subscriptions.append(await bus.subscribe(sid, after=1))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.1)
        ended = []
        for subscription in subscriptions:
            stream = aiter(subscription)
            nxt = asyncio.ensure_future(anext(stream))
            done, _ = await asyncio.wait({nxt}, timeout=0.05)
            if done:
                ended.append(nxt.exception() is not None)
            else:
                nxt.cancel()
    finally:
        await bus.close()
    assert ended == [], "some streams ended although their sessions are still queued"


async def test_a_client_that_goes_away_leaves_no_watcher(settings, store):
    [sid] = await queued(store)
    app = create_app(settings, store)
    bus = app.state.telecoder.bus
    async with serving(app) as base:
        frames = await collect(f"{base}/api/sessions/{sid}/events", count=1)  # then hangs up
        assert [f.event for f in frames] == ["status"]
        await until(lambda: bus.watcher_count == 0, seconds=5)
        async with httpx.AsyncClient() as c:
            health = await c.get(f"{base}/api/health")
    assert health.json()["watchers"] == 0
