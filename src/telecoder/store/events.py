"""The append-only event log of each session.

Every event has a global, increasing ``id`` and a per-session ``seq`` with no gaps. The sequence
is allocated by bumping ``sessions.last_seq``, which also serialises writers of one session on
PostgreSQL (a row lock) — and, for a worker, fences the write on the lease it holds.

``Events.append_together`` is ``append`` with group commit: the appends of many sessions made in
the same moment (a worker's recorders flush on a common tick) are written in one transaction,
each still fenced on its own lease, each told its own outcome.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Event, EventKind, Lease, NewEvent, SessionStatus
from telecoder.errors import LeaseLost, SessionNotFound
from telecoder.store.db import Database, dumps, loads, notify_events
from telecoder.store.schema import events, sessions


def fenced(lease: Lease) -> list[object]:
    """The WHERE clause of a write that only the lease holder may make."""
    return [
        sessions.c.id == lease.session_id,
        sessions.c.attempt == lease.attempt,
        sessions.c.worker_id == lease.worker_id,
        sessions.c.status == SessionStatus.RUNNING.value,
    ]


async def append_events(
    conn: AsyncConnection,
    session_id: str,
    lease: Lease | None,
    new: Sequence[NewEvent],
    *,
    now: float | None = None,
) -> int:
    """Append ``new`` in order; with a lease, only while it holds. Returns the last seq."""
    if not new:
        return 0
    where = fenced(lease) if lease is not None else [sessions.c.id == session_id]
    bump = (
        update(sessions)
        .where(*where)
        .values(last_seq=sessions.c.last_seq + len(new))
        .returning(sessions.c.last_seq)
    )
    last = (await conn.execute(bump)).scalar()
    if last is None:
        raise _not_held(session_id, lease)
    await insert_events(conn, session_id, lease.attempt if lease else None, int(last), new, now=now)
    return int(last)


def _not_held(session_id: str, lease: Lease | None) -> Exception:
    if lease is not None:
        return LeaseLost(f"lost the lease on {session_id} attempt {lease.attempt}")
    return SessionNotFound(f"no session {session_id!r}")


async def insert_events(
    conn: AsyncConnection,
    session_id: str,
    attempt: int | None,
    last: int,
    new: Sequence[NewEvent],
    *,
    now: float | None = None,
) -> None:
    """Insert ``new`` as seqs ``last - len(new) + 1 … last``, already allocated by the caller
    (which bumped ``sessions.last_seq`` by ``len(new)`` in this transaction). Live readers
    hear of them at commit (``notify_events``)."""
    stamp = now if now is not None else time.time()
    first = last - len(new) + 1
    await conn.execute(
        insert(events),
        [
            {
                "session_id": session_id,
                "attempt": attempt,
                "seq": first + i,
                "ts": e.ts if e.ts is not None else stamp,
                "kind": e.kind.value,
                "data": dumps(e.data),
            }
            for i, e in enumerate(new)
        ],
    )
    await notify_events(conn, session_id)


@dataclass(slots=True)
class _Append:
    session_id: str
    lease: Lease | None
    new: Sequence[NewEvent]
    done: asyncio.Future[int]


class Events:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: builtins.list[_Append] = []  # appends for the next group commit
        self._committing: asyncio.Task[None] | None = None

    async def append(
        self, session_id: str, new: Sequence[NewEvent], lease: Lease | None = None
    ) -> int:
        async with self._db.write() as conn:
            return await append_events(conn, session_id, lease, new)

    async def append_together(
        self, session_id: str, new: Sequence[NewEvent], lease: Lease | None = None
    ) -> int:
        """``append``, written in one transaction with the other sessions' appends made in the
        same moment or while the previous group was being written."""
        if not new:
            return 0
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Append(session_id, lease, new, done))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_groups())
        return await asyncio.shield(done)  # a cancelled caller leaves the group unharmed

    async def _commit_groups(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # the others of this moment join
                group, self._waiting = self._waiting, []
                try:
                    await self._commit(group)
                except BaseException as e:
                    for item in group:
                        if not item.done.done():
                            item.done.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
        finally:
            self._committing = None

    async def _commit(self, group: Sequence[_Append]) -> None:
        rows: builtins.list[dict[str, Any]] = []
        outcomes: builtins.list[tuple[_Append, int | Exception]] = []
        stamp = time.time()
        async with self._db.write() as conn:
            for item in group:
                where = (
                    fenced(item.lease)
                    if item.lease is not None
                    else [sessions.c.id == item.session_id]
                )
                bump = (
                    update(sessions)
                    .where(*where)
                    .values(last_seq=sessions.c.last_seq + len(item.new))
                    .returning(sessions.c.last_seq)
                )
                last = (await conn.execute(bump)).scalar()
                if last is None:  # nothing written for this one; the others go on
                    outcomes.append((item, _not_held(item.session_id, item.lease)))
                    continue
                attempt = item.lease.attempt if item.lease else None
                first = int(last) - len(item.new) + 1
                rows += [
                    {
                        "session_id": item.session_id,
                        "attempt": attempt,
                        "seq": first + i,
                        "ts": e.ts if e.ts is not None else stamp,
                        "kind": e.kind.value,
                        "data": dumps(e.data),
                    }
                    for i, e in enumerate(item.new)
                ]
                outcomes.append((item, int(last)))
                await notify_events(conn, item.session_id)  # live readers hear at commit
            if rows:
                await conn.execute(insert(events), rows)
        for item, outcome in outcomes:
            if item.done.done():
                continue
            if isinstance(outcome, Exception):
                item.done.set_exception(outcome)
            else:
                item.done.set_result(outcome)

    async def last_seq(self, session_id: str) -> int:
        """The seq of the session's latest event (0 when none)."""
        query = select(sessions.c.last_seq).where(sessions.c.id == session_id)
        async with self._db.read() as conn:
            last = (await conn.execute(query)).scalar()
        if last is None:
            raise SessionNotFound(f"no session {session_id!r}")
        return int(last)

    async def list(self, session_id: str, *, after: int = 0, limit: int = 1000) -> list[Event]:
        """Events of one session with ``seq > after``, oldest first."""
        query = (
            select(events)
            .where(events.c.session_id == session_id, events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(r) for r in rows]

    # --- for live readers (the bus): cheap questions asked many times a second ---

    async def heads(self, session_ids: Collection[str]) -> dict[str, Head]:
        """The last seq and status of each session named (missing ones are left out)."""
        if not session_ids:
            return {}
        query = select(sessions.c.id, sessions.c.last_seq, sessions.c.status).where(
            sessions.c.id.in_(list(session_ids))
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {r.id: Head(last_seq=r.last_seq, status=SessionStatus(r.status)) for r in rows}

    async def since(self, positions: Mapping[str, tuple[int, int]]) -> builtins.list[Event]:
        """For each session, its events with ``after < seq <= upto``: one query for all."""
        if not positions:
            return []
        query = (
            select(events)
            .where(
                or_(
                    *(
                        and_(events.c.session_id == sid, events.c.seq > lo, events.c.seq <= hi)
                        for sid, (lo, hi) in positions.items()
                    )
                )
            )
            .order_by(events.c.session_id, events.c.seq)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(r) for r in rows]

    async def last_change(self) -> tuple[int, float]:
        """How many sessions there are and when any of them last changed state."""
        query = select(func.count(), func.max(sessions.c.updated_at)).select_from(sessions)
        async with self._db.read() as conn:
            count, latest = (await conn.execute(query)).one()
        return int(count), float(latest or 0.0)


@dataclass(frozen=True, slots=True)
class Head:
    last_seq: int
    status: SessionStatus


def event_from_row(r: Any) -> Event:
    return Event(
        id=r.id,
        session_id=r.session_id,
        attempt=r.attempt,
        seq=r.seq,
        ts=r.ts,
        kind=EventKind(r.kind),
        data=loads(r.data),
    )
