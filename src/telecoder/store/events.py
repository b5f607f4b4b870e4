"""The append-only event log of each session.

Every event has a global, increasing ``id`` and a per-session ``seq`` with no gaps. The sequence
is allocated by bumping ``sessions.last_seq``, which also serialises writers of one session on
PostgreSQL (a row lock) — and, for a worker, fences the write on the lease it holds.
"""

from __future__ import annotations

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
        if lease is not None:
            raise LeaseLost(f"lost the lease on {session_id} attempt {lease.attempt}")
        raise SessionNotFound(f"no session {session_id!r}")
    await insert_events(conn, session_id, lease.attempt if lease else None, int(last), new, now=now)
    return int(last)


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


class Events:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self, session_id: str, new: Sequence[NewEvent], lease: Lease | None = None
    ) -> int:
        async with self._db.write() as conn:
            return await append_events(conn, session_id, lease, new)

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
