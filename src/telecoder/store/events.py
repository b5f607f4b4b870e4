"""The append-only event log of each session.

Every event has a global, increasing ``id`` and a per-session ``seq`` with no gaps. The sequence
is allocated by bumping ``sessions.last_seq``, which also serialises writers of one session on
PostgreSQL (a row lock) — and, for a worker, fences the write on the lease it holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Event, EventKind, Lease, NewEvent, SessionStatus
from telecoder.errors import LeaseLost, SessionNotFound
from telecoder.store.db import Database, dumps, loads
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
    stamp = now if now is not None else time.time()
    first = last - len(new) + 1
    await conn.execute(
        insert(events),
        [
            {
                "session_id": session_id,
                "attempt": lease.attempt if lease is not None else None,
                "seq": first + i,
                "ts": e.ts if e.ts is not None else stamp,
                "kind": e.kind.value,
                "data": dumps(e.data),
            }
            for i, e in enumerate(new)
        ],
    )
    return int(last)


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


def event_from_row(r: Row[Any]) -> Event:
    return Event(
        id=r.id,
        session_id=r.session_id,
        attempt=r.attempt,
        seq=r.seq,
        ts=r.ts,
        kind=EventKind(r.kind),
        data=loads(r.data),
    )
