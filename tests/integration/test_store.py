"""Sessions and events on SQLite and PostgreSQL: create, find, list, cancel, retry, events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from telecoder.domain import EventKind, FailureKind, NewEvent, NewSession, SessionStatus
from telecoder.errors import BadInput, Conflict, SessionNotFound
from telecoder.store import Outcome, Page, Store, open_store
from telecoder.store.schema import sessions
from tests.conftest import shared_bits


def new(prompt: str = "echo hi", *, repo: str = "/src/repo", **kw: Any) -> NewSession:
    return NewSession(repo=repo, prompt=prompt, engine="shell", **kw)


async def test_create_and_get(store: Store) -> None:
    request = new("sed -i s/a/b/ x", base_ref="dev", priority=3, origin={"channel": "cli"})
    session = await store.sessions.create(request)
    assert session.id == request.id
    assert session.status == SessionStatus.QUEUED
    assert session.branch == f"telecoder/{request.id}"
    assert (session.prompt, session.base_ref, session.priority) == ("sed -i s/a/b/ x", "dev", 3)
    assert session.origin == {"channel": "cli"}
    assert session.attempt == 0
    assert session.result is None
    assert session.created_at == session.updated_at == session.available_at
    assert await store.sessions.get(request.id) == session
    events = await store.events.list(request.id)
    assert [(e.seq, e.kind, e.data) for e in events] == [
        (1, EventKind.STATUS, {"status": "queued"})
    ]


@pytest.mark.usefixtures("loose_umask")
async def test_a_new_sqlite_database_is_for_its_user_alone(tmp_path: Path) -> None:
    """The database, its -wal and -shm, and the directories made for them: 0600 and 0700."""
    home = tmp_path / "home" / "telecoder"
    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    try:
        await store.sessions.create(NewSession(repo="/r", prompt="a secret", engine="shell"))
        made = sorted(p.name for p in home.iterdir())
        assert made == ["telecoder.db", "telecoder.db-shm", "telecoder.db-wal"]
        assert shared_bits(tmp_path / "home") == {}
    finally:
        await store.close()


async def test_create_refuses_an_empty_prompt(store: Store) -> None:
    with pytest.raises(BadInput):
        await store.sessions.create(new("  \n"))
    assert (await store.sessions.list()).sessions == []


async def test_get_unknown(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        await store.sessions.get("nosuchid00")


async def test_resolve_by_id_and_prefix(store: Store) -> None:
    a = await store.sessions.create(new(id="abcd1111xx"))
    b = await store.sessions.create(new(id="abcd2222xx"))
    assert (await store.sessions.resolve("abcd1111xx")).id == a.id
    assert (await store.sessions.resolve("abcd1")).id == a.id
    assert (await store.sessions.resolve("abcd2")).id == b.id
    with pytest.raises(BadInput, match="ambiguous"):
        await store.sessions.resolve("abcd")
    with pytest.raises(SessionNotFound):
        await store.sessions.resolve("zzzz")
    with pytest.raises(SessionNotFound):
        await store.sessions.resolve("abc")  # too short to be a prefix
    # LIKE wildcards in the reference are literal characters.
    with pytest.raises(SessionNotFound):
        await store.sessions.resolve("abc_1")
    with pytest.raises(SessionNotFound):
        await store.sessions.resolve("ab%1")


async def test_list_filters(store: Store) -> None:
    one = await store.sessions.create(new(repo="/r/one"))
    two = await store.sessions.create(new(repo="/r/two"))
    other = await store.sessions.create(
        NewSession(repo="/r/one", prompt="p", engine="other-engine")
    )
    await store.sessions.cancel(two.id)

    def ids(page: Page) -> list[str]:
        return [s.id for s in page.sessions]

    assert ids(await store.sessions.list()) == [other.id, two.id, one.id]
    assert ids(await store.sessions.list(repo="/r/one")) == [other.id, one.id]
    assert ids(await store.sessions.list(status=SessionStatus.CANCELLED)) == [two.id]
    assert ids(await store.sessions.list(status=SessionStatus.QUEUED, engine="shell")) == [one.id]
    assert ids(await store.sessions.list(engine="other-engine")) == [other.id]
    assert ids(await store.sessions.list(repo="/r/none")) == []


async def _pages(store: Store, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await store.sessions.list(limit=limit, cursor=cursor)
        pages.append([s.id for s in page.sessions])
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


async def test_cursor_pagination_has_no_dupes_or_gaps(store: Store) -> None:
    created = [(await store.sessions.create(new(f"task {i}"))).id for i in range(8)]
    pages = await _pages(store, 3)
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [sid for page in pages for sid in page] == created[::-1]


async def test_cursor_pagination_over_equal_creation_times(store: Store) -> None:
    created = {(await store.sessions.create(new(f"task {i}"))).id for i in range(9)}
    async with store.db.write() as conn:
        await conn.execute(update(sessions).values(created_at=1_700_000_000.123456))
    pages = await _pages(store, 3)
    flat = [sid for page in pages for sid in page]
    assert [len(p) for p in pages] == [3, 3, 3]
    assert len(flat) == len(set(flat)) == 9
    assert set(flat) == created
    assert flat == sorted(flat, reverse=True)


async def test_invalid_cursor(store: Store) -> None:
    with pytest.raises(BadInput):
        await store.sessions.list(cursor="yesterday:abc")


async def test_cancel_queued_is_immediate(store: Store) -> None:
    session = await store.sessions.create(new())
    cancelled = await store.sessions.cancel(session.id)
    assert cancelled.status == SessionStatus.CANCELLED
    assert cancelled.failure_kind == FailureKind.CANCELLED
    assert cancelled.finished_at is not None
    assert await store.queue.claim("w1") is None
    last = (await store.events.list(session.id))[-1]
    assert (last.kind, last.data) == (EventKind.STATUS, {"status": "cancelled"})


async def test_cancel_running_flags_it_for_its_worker(store: Store) -> None:
    session = await store.sessions.create(new())
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    assert (await store.queue.heartbeat(claimed.lease)).cancel_requested is False
    flagged = await store.sessions.cancel(session.id)
    assert flagged.status == SessionStatus.RUNNING
    assert flagged.cancel_requested is True
    assert (await store.queue.heartbeat(claimed.lease)).cancel_requested is True
    done = await store.queue.finish(
        claimed.lease,
        Outcome(status=SessionStatus.CANCELLED, failure_kind=FailureKind.CANCELLED),
    )
    assert done.status == SessionStatus.CANCELLED


async def test_cancel_finished_or_unknown(store: Store) -> None:
    session = await store.sessions.create(new())
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    await store.queue.finish(claimed.lease, Outcome(status=SessionStatus.SUCCEEDED))
    events_before = len(await store.events.list(session.id))
    with pytest.raises(Conflict):
        await store.sessions.cancel(session.id)
    assert (await store.sessions.get(session.id)).status == SessionStatus.SUCCEEDED
    assert len(await store.events.list(session.id)) == events_before
    with pytest.raises(SessionNotFound):
        await store.sessions.cancel("nosuchid00")


async def test_retry_makes_a_linked_session_on_the_same_branch(store: Store) -> None:
    old = await store.sessions.create(
        new("make it so", base_ref="dev", priority=2, timeout_seconds=60.0, max_attempts=5,
            budget_usd=2.5)
    )  # fmt: skip
    await store.sessions.cancel(old.id)
    again = await store.sessions.retry(old.id)
    assert again.id != old.id
    assert again.status == SessionStatus.QUEUED
    assert again.parent_id == old.id
    assert again.branch == old.branch
    assert (again.prompt, again.base_ref, again.priority) == ("make it so", "dev", 2)
    assert (again.timeout_seconds, again.max_attempts, again.budget_usd) == (60.0, 5, 2.5)
    assert (await store.events.list(again.id))[0].data == {"status": "queued", "retry_of": old.id}
    # A retry of a retry keeps the branch too.
    await store.sessions.cancel(again.id)
    third = await store.sessions.retry(again.id)
    assert (third.parent_id, third.branch) == (again.id, old.branch)


async def test_retry_of_an_unfinished_session_is_a_conflict(store: Store) -> None:
    queued = await store.sessions.create(new())
    with pytest.raises(Conflict):
        await store.sessions.retry(queued.id)
    assert await store.queue.claim("w1") is not None
    with pytest.raises(Conflict):
        await store.sessions.retry(queued.id)
    assert len((await store.sessions.list()).sessions) == 1
    with pytest.raises(SessionNotFound):
        await store.sessions.retry("nosuchid00")


def _batch(*texts: str) -> list[NewEvent]:
    return [NewEvent(kind=EventKind.OUTPUT, data={"text": t}) for t in texts]


async def test_events_have_gapless_seq_and_increasing_ids(store: Store) -> None:
    a = await store.sessions.create(new())
    b = await store.sessions.create(new())
    await store.events.append(a.id, _batch("a1", "a2"))
    await store.events.append(b.id, _batch("b1"))
    assert await store.events.append(a.id, _batch("a3", "a4", "a5")) == 6
    await store.events.append(b.id, _batch("b2", "b3"))
    events_a = await store.events.list(a.id)
    events_b = await store.events.list(b.id)
    assert [e.seq for e in events_a] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in events_b] == [1, 2, 3, 4]
    assert [e.data.get("text") for e in events_a[1:]] == ["a1", "a2", "a3", "a4", "a5"]
    assert all(e.attempt is None for e in events_a)
    # Global ids increase in the order of writing, across sessions.
    by_id = sorted([*events_a, *events_b], key=lambda e: e.id)
    order = [e.data.get("text", f"{e.session_id}:queued") for e in by_id]
    assert order == [
        f"{a.id}:queued",
        f"{b.id}:queued",
        "a1",
        "a2",
        "b1",
        "a3",
        "a4",
        "a5",
        "b2",
        "b3",
    ]


async def test_events_list_after_and_limit(store: Store) -> None:
    session = await store.sessions.create(new())
    await store.events.append(session.id, _batch(*[f"line {i}" for i in range(10)]))
    after = await store.events.list(session.id, after=4)
    assert [e.seq for e in after] == list(range(5, 12))
    limited = await store.events.list(session.id, after=4, limit=3)
    assert [e.seq for e in limited] == [5, 6, 7]
    assert await store.events.list(session.id, after=11) == []
    assert await store.events.list("nosuchid00") == []


async def test_concurrent_appends_to_one_session_never_collide(store: Store) -> None:
    session = await store.sessions.create(new())
    writers = [store.events.append(session.id, _batch(f"w{i}.0", f"w{i}.1")) for i in range(20)]
    await asyncio.gather(*writers)
    events = await store.events.list(session.id)
    assert [e.seq for e in events] == list(range(1, 42))
    # Each batch's events are adjacent and in order.
    texts = [e.data["text"] for e in events[1:]]
    for i in range(0, 40, 2):
        writer = texts[i].split(".")[0]
        assert texts[i : i + 2] == [f"{writer}.0", f"{writer}.1"]


async def test_append_to_an_unknown_session(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        await store.events.append("nosuchid00", _batch("x"))


async def test_event_data_keeps_unicode_and_nul(store: Store) -> None:
    session = await store.sessions.create(new())
    data = {"text": "caf\u00e9 \u2603 nul:\x00 end", "nested": {"list": [1, None, True]}}
    await store.events.append(session.id, [NewEvent(kind=EventKind.MESSAGE, data=data)])
    assert (await store.events.list(session.id))[-1].data == data


async def test_a_write_cancelled_mid_statement_ends_cancelled_and_the_store_goes_on(
    store: Store,
) -> None:
    """A task cancelled inside a write transaction (a stop, a timeout) raises CancelledError and
    nothing else: the driver drops the connection, and leaving the transaction must not open a
    new one outside the async context (SQLAlchemy's MissingGreenlet, and a never-awaited connect
    warned about at garbage collection)."""
    sleep = "SELECT pg_sleep(5)" if not store.db.is_sqlite else "SELECT 1"
    entered = asyncio.Event()

    async def write() -> None:
        async with store.db.write() as conn:
            entered.set()
            await conn.exec_driver_sql(sleep)
            await asyncio.sleep(5)

    task = asyncio.create_task(write())
    await entered.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    session = await store.sessions.create(new())
    assert (await store.sessions.get(session.id)).status == SessionStatus.QUEUED
