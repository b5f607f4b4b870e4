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
import functools
import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Event, EventKind, Lease, NewEvent, SessionStatus
from telecoder.errors import LeaseLost, SessionNotFound
from telecoder.store.db import Database, dumps, loads, notify_events, padded
from telecoder.store.notify import MAX_BODY
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
    rows = [
        {
            "session_id": session_id,
            "attempt": attempt,
            "seq": first + i,
            "ts": e.ts if e.ts is not None else stamp,
            "kind": e.kind.value,
            "data": dumps(e.data),
        }
        for i, e in enumerate(new)
    ]
    await notify_events(conn, session_id, bodies=await _insert(conn, rows))


async def _insert(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Insert the event ``rows``; what each session's notice carries of them (``carried``)."""
    returning = insert(events).returning(events.c.id, sort_by_parameter_order=True)
    ids = (await conn.execute(returning, rows)).scalars().all()
    return carried(rows, ids)


def carried(rows: Sequence[dict[str, Any]], ids: Sequence[int]) -> dict[str, str]:
    """The events of each session as its notice carries them, JSON ``[[id, attempt, seq, ts,
    kind, data], …]``, the data as stored; a session whose events do not fit is left out (its
    notice is bare: the bus reads them)."""
    parts: dict[str, list[str]] = {}
    for row, event_id in zip(rows, ids, strict=True):
        parts.setdefault(row["session_id"], []).append(
            f"[{int(event_id)},{json.dumps(row['attempt'])},{int(row['seq'])},"
            f"{float(row['ts'])!r},{json.dumps(row['kind'])},{row['data']}]"
        )
    bodies = {}
    for session_id, items in parts.items():
        body = "[" + ",".join(items) + "]"
        if len(body) <= MAX_BODY and len(body.encode()) <= MAX_BODY:
            bodies[session_id] = body
    return bodies


def events_carried(session_id: str, body: str) -> builtins.list[Event] | None:
    """The events a notice's ``body`` carries, in seq order; None if it cannot be read."""
    try:
        return [
            Event(
                id=int(event_id),
                session_id=session_id,
                attempt=attempt,
                seq=int(seq),
                ts=float(ts),
                kind=EventKind(kind),
                data=data,
            )
            for event_id, attempt, seq, ts, kind, data in json.loads(body)
        ]
    except (ValueError, TypeError):
        return None


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
        done = self._join(session_id, lease, new)
        return await asyncio.shield(done)  # a cancelled caller leaves the group unharmed

    async def append_many(
        self, appends: Sequence[tuple[str, Sequence[NewEvent], Lease | None]]
    ) -> builtins.list[int | Exception]:
        """``append_together`` of several sessions' batches at once (one caller, no task per
        batch): each one's last seq, or the error that kept it out (``LeaseLost``, ...)."""
        waiting = [self._join(session_id, lease, new) for session_id, new, lease in appends if new]
        if waiting:
            await asyncio.wait(waiting)  # a cancelled caller leaves the group unharmed
        done = iter(waiting)
        out: builtins.list[int | Exception] = []
        for _, new, _ in appends:
            if not new:
                out.append(0)
                continue
            future = next(done)
            error = future.exception()
            if error is not None and not isinstance(error, Exception):
                raise error
            out.append(error if error is not None else future.result())
        return out

    def _join(
        self, session_id: str, lease: Lease | None, new: Sequence[NewEvent]
    ) -> asyncio.Future[int]:
        """Queue an append for the next group commit; its future tells its outcome."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Append(session_id, lease, new, done))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_groups())
        return done

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
            lasts = await _bump_together(conn, group)
            for item, last in zip(group, lasts, strict=True):
                if last is None:  # nothing written for this one; the others go on
                    outcomes.append((item, _not_held(item.session_id, item.lease)))
                    continue
                attempt = item.lease.attempt if item.lease else None
                first = last - len(item.new) + 1
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
                outcomes.append((item, last))
            if rows:
                bodies = await _insert(conn, rows)
                # Live readers hear at commit: one notice per session that got events.
                await notify_events(
                    conn,
                    *(item.session_id for item, last in outcomes if isinstance(last, int)),
                    bodies=bodies,
                )
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
        async with self._db.read_one() as conn:
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
        async with self._db.read_one() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(r) for r in rows]

    async def latest_of_kind(
        self, session_id: str, kind: EventKind, *, limit: int = 20
    ) -> builtins.list[Event]:
        """A session's last ``limit`` events of one kind, newest first."""
        query = (
            select(events)
            .where(events.c.session_id == session_id, events.c.kind == kind.value)
            .order_by(events.c.seq.desc())
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
        async with self._db.read_one() as conn:
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
        async with self._db.read_one() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(r) for r in rows]

    async def last_change(self) -> tuple[int, float]:
        """How many sessions there are and when any of them last changed state."""
        query = select(func.count(), func.max(sessions.c.updated_at)).select_from(sessions)
        async with self._db.read_one() as conn:
            count, latest = (await conn.execute(query)).one()
        return int(count), float(latest or 0.0)


async def _bump_together(
    conn: AsyncConnection, group: Sequence[_Append]
) -> builtins.list[int | None]:
    """Allocate each append's seqs (``last_seq`` bumped by its length, fenced on its lease):
    the last seq of each, or None where its lease no longer holds.

    Appends on leases to distinct sessions (a worker's recorders, the usual group) take one
    ``UPDATE … FROM (VALUES …) RETURNING`` per ``_BUMP_ROWS``: a statement per session would
    cost a round trip (on SQLite, several hops to the driver's thread) and SQLAlchemy's
    statement building each, ten times a second for every printing session. Anything else
    (no lease, a session twice) takes a statement each, in order.
    """
    leases = [(item.lease, len(item.new)) for item in group if item.lease is not None]
    if len(leases) < len(group) or len({item.session_id for item in group}) < len(group):
        return [await _bump(conn, item) for item in group]
    lasts: dict[str, int] = {}
    for start in range(0, len(leases), _BUMP_ROWS):
        part = leases[start : start + _BUMP_ROWS]
        size = padded(len(part))
        params: dict[str, Any] = {"running": SessionStatus.RUNNING.value}
        for i in range(size):
            lease, n = part[i] if i < len(part) else (None, 0)  # a NULL row matches nothing
            params |= {
                f"s{i}": lease.session_id if lease else None,
                f"a{i}": lease.attempt if lease else None,
                f"w{i}": lease.worker_id if lease else None,
                f"n{i}": n,
            }
        result = await conn.execute(_bump_statement(size), params)
        lasts.update((row[0], int(row[1])) for row in result)
    return [lasts.get(item.session_id) for item in group]


async def _bump(conn: AsyncConnection, item: _Append) -> int | None:
    where = fenced(item.lease) if item.lease is not None else [sessions.c.id == item.session_id]
    bump = (
        update(sessions)
        .where(*where)
        .values(last_seq=sessions.c.last_seq + len(item.new))
        .returning(sessions.c.last_seq)
    )
    last = (await conn.execute(bump)).scalar()
    return None if last is None else int(last)


_BUMP_ROWS = 512  # appends per statement: 4 parameters each, well under SQLite's 32766


@functools.lru_cache(maxsize=16)
def _bump_statement(n: int) -> TextClause:
    """The fenced seq bump of ``n`` sessions at once (SQLite >= 3.35 and PostgreSQL both take
    ``UPDATE … FROM`` with ``RETURNING``; a ``VALUES`` list's columns are ``column1``… in both).
    Kept per ``n`` (a power of two, ``padded``): the text and its compiled form are built once."""
    rows = ", ".join(f"(:s{i}, :a{i}, :w{i}, :n{i})" for i in range(n))
    return text(
        f"UPDATE sessions SET last_seq = sessions.last_seq + v.column4 FROM (VALUES {rows}) AS v "
        "WHERE sessions.id = v.column1 AND sessions.attempt = v.column2 "
        "AND sessions.worker_id = v.column3 AND sessions.status = :running "
        "RETURNING sessions.id, sessions.last_seq"
    )


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
