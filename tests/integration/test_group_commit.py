"""The group commit of many sessions' appends (``Events.append_together``): the seqs of every
leased session allocated by one statement, each fenced on its own lease; a session twice in
one group keeps its order; on PostgreSQL one NOTIFY per session, sent by one statement."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import event as sqla_event
from sqlalchemy import update

from telecoder.domain import EventKind, Lease, NewEvent, NewSession
from telecoder.errors import LeaseLost
from telecoder.store import Store, open_store
from telecoder.store import events as events_module
from telecoder.store.events import events_carried
from telecoder.store.notify import EVENTS_CHANNEL, Notice
from telecoder.store.schema import sessions


def line(text: str) -> NewEvent:
    return NewEvent(kind=EventKind.OUTPUT, data={"stream": "stdout", "text": text})


async def leases(store: Store, n: int) -> list[Lease]:
    found = []
    for i in range(n):
        await store.sessions.create(NewSession(repo="/src/repo", prompt=f"{i}", engine="shell"))
        claim = await store.queue.claim("w1")
        assert claim is not None
        found.append(claim.lease)
    return found


async def texts(store: Store, session_id: str, after: int) -> list[tuple[int, str]]:
    """The output lines after seq ``after`` (claiming a session records events too), their seqs
    counted from ``after``."""
    found = await store.events.list(session_id, after=after)
    return [(e.seq - after, e.data["text"]) for e in found if e.kind == EventKind.OUTPUT]


def count_statements(store: Store) -> list[str]:
    seen: list[str] = []
    sqla_event.listen(
        store.db.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: seen.append(statement),
    )
    return seen


async def test_one_statement_allocates_the_seqs_of_every_session_each_on_its_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "_BUMP_ROWS", 2)  # 5 sessions: three statements
    held = await leases(store, 5)
    lost = held[3]
    async with store.db.write() as conn:  # another worker has this one now
        await conn.execute(
            update(sessions).where(sessions.c.id == lost.session_id).values(worker_id="w2")
        )
    base = [await store.events.last_seq(x.session_id) for x in held]
    await store.events.append_together(held[0].session_id, [line("before")], lease=held[0])
    statements = count_statements(store)
    results = await asyncio.gather(
        *(
            store.events.append_together(
                lease.session_id, [line(f"{i}.a"), line(f"{i}.b")], lease=lease
            )
            for i, lease in enumerate(held)
        ),
        return_exceptions=True,
    )
    bumps = [s for s in statements if s.lstrip().upper().startswith("UPDATE SESSIONS")]
    assert len(bumps) == 3
    assert results[0] == base[0] + 3  # after "before"
    assert results[1:3] == [base[1] + 2, base[2] + 2]
    assert isinstance(results[3], LeaseLost)
    assert results[4] == base[4] + 2
    assert await texts(store, held[0].session_id, base[0]) == [
        (1, "before"),
        (2, "0.a"),
        (3, "0.b"),
    ]
    assert await texts(store, held[4].session_id, base[4]) == [(1, "4.a"), (2, "4.b")]
    assert await texts(store, lost.session_id, base[3]) == []


async def test_a_session_twice_in_one_group_keeps_its_order(store: Store) -> None:
    a, b = await leases(store, 2)
    base_a, base_b = [await store.events.last_seq(x.session_id) for x in (a, b)]
    results = await asyncio.gather(
        store.events.append_together(a.session_id, [line("1"), line("2")], lease=a),
        store.events.append_together(b.session_id, [line("b")], lease=b),
        store.events.append_together(a.session_id, [line("3")], lease=a),
    )
    assert results == [base_a + 2, base_b + 1, base_a + 3]
    assert await texts(store, a.session_id, base_a) == [(1, "1"), (2, "2"), (3, "3")]
    assert await texts(store, b.session_id, base_b) == [(1, "b")]


@pytest.mark.postgres
async def test_a_group_sends_one_notice_per_session_in_one_statement(pg_url: str) -> None:
    store = await open_store(pg_url, migrate=False)
    heard: list[Notice] = []
    unsubscribe = store.db.subscribe(heard.append)
    listener = await psycopg.AsyncConnection.connect(store.db.dsn, autocommit=True)
    try:
        held = await leases(store, 3)  # statements of 4 rows, one of them NULL
        await listener.execute(f"LISTEN {EVENTS_CHANNEL}")
        statements = count_statements(store)
        heard.clear()
        await asyncio.gather(
            *(store.events.append_together(x.session_id, [line("x")], lease=x) for x in held)
        )
        payloads = [n.payload async for n in listener.notifies(timeout=1.0)]
    finally:
        unsubscribe()
        await listener.close()
        await store.close()
    ids = [x.session_id for x in held]
    notices = [Notice.decode(p) for p in payloads]
    assert sorted(n.session_id for n in notices if n) == sorted(ids)
    assert sum("pg_notify" in s for s in statements) == 1
    assert sorted(heard, key=str) == sorted(notices, key=str)
    for n in heard:  # each carries its session's event
        assert [e.data for e in events_carried(n.session_id, n.body) or []] == [line("x").data]


async def test_append_many_writes_every_batch_in_one_transaction_each_told_its_outcome(
    store: Store,
) -> None:
    a, b, gone = await leases(store, 3)
    async with store.db.write() as conn:  # another worker has this one now
        await conn.execute(
            update(sessions).where(sessions.c.id == gone.session_id).values(worker_id="w2")
        )
    before = {x.session_id: await store.events.last_seq(x.session_id) for x in (a, b, gone)}
    commits: list[int] = []
    sqla_event.listen(store.db.engine.sync_engine, "commit", lambda conn: commits.append(1))
    outcomes = await store.events.append_many(
        [
            (a.session_id, [line("a1"), line("a2")], a),
            (b.session_id, [], b),  # nothing to write: 0, and no row
            (gone.session_id, [line("lost")], gone),
            (b.session_id, [line("b1")], b),
        ]
    )
    assert len(commits) == 1
    assert outcomes[0] == before[a.session_id] + 2
    assert outcomes[1] == 0
    assert isinstance(outcomes[2], LeaseLost)
    assert outcomes[3] == before[b.session_id] + 1
    assert await texts(store, a.session_id, before[a.session_id]) == [(1, "a1"), (2, "a2")]
    assert await texts(store, b.session_id, before[b.session_id]) == [(1, "b1")]
    assert await texts(store, gone.session_id, before[gone.session_id]) == []
