"""Claims: a worker takes a queued session, starting a new attempt under a lease.

A claim is one write transaction: pick the best queued session (SQLite holds the write lock from
``BEGIN IMMEDIATE``; PostgreSQL skips rows other claimers hold with ``FOR UPDATE SKIP LOCKED``),
move it to ``running`` with ``attempt + 1`` and a lease, and insert the attempt row. With
concurrency limits, PostgreSQL claimers first take one transaction-scoped advisory lock, so the
count of running sessions they check cannot change under them (SQLite's write lock already
serialises them). ``create_claimed`` enqueues and claims at once; ``adopt`` claims a session
another store queued (a remote worker's scratch store). Part of ``Queue`` (``store.queue``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import (
    AttemptStatus,
    EventKind,
    Lease,
    NewEvent,
    NewSession,
    Run,
    Session,
    SessionStatus,
)
from telecoder.store.affinity import not_held_elsewhere
from telecoder.store.budgets import Held, claimable
from telecoder.store.control import not_paused
from telecoder.store.db import Database, dumps
from telecoder.store.events import append_events, insert_events
from telecoder.store.rows import (
    new_session_values,
    queued_event,
    session_from_row,
)
from telecoder.store.schema import attempts, runs, sessions
from telecoder.store.schema import events as event_rows
from telecoder.store.workers import not_drained

# Key of the PostgreSQL advisory lock that serialises claims under concurrency limits.
_CLAIM_LOCK = 7080002


class _BranchBusy(Exception):
    """Another session took the claimed session's branch first."""


async def _branch_taken(conn: AsyncConnection, session: Session) -> bool:
    """Whether another session runs on ``session``'s branch (PostgreSQL).

    Two claims can each pick a session of one branch before either commits: the subquery of
    both saw no writer. Claims of one branch take turns on an advisory lock, and the one that
    waited sees the first one's committed claim and gives its own up.
    """
    digest = hashlib.blake2b(session.branch.encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    others = (
        select(func.count())
        .select_from(sessions)
        .where(
            sessions.c.branch == session.branch,
            sessions.c.status == SessionStatus.RUNNING.value,
            sessions.c.id != session.id,
        )
    )
    return bool((await conn.execute(others)).scalar_one())


@dataclass(frozen=True, slots=True)
class Claimed:
    session: Session
    lease: Lease


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Concurrency limits a claim respects; 0 means no limit."""

    max_running: int = 0  # running sessions in the whole system
    max_running_per_repo: int = 0  # running sessions of one repository

    @property
    def active(self) -> bool:
        return self.max_running > 0 or self.max_running_per_repo > 0


class Claims:
    # The queue's state (``Queue.__init__``).
    _db: Database
    lease_seconds: float
    retry_backoff_seconds: float

    async def claim(
        self,
        worker_id: str,
        *,
        engines: Collection[str] | None = None,
        only: str | None = None,
        limits: Limits | None = None,
        held: Held | None = None,
    ) -> Claimed | None:
        """Take the best queued session that is due (or only the session ``only``), or None.

        Higher ``priority`` first, then the longest waiting. ``engines``: only sessions of
        these engines. ``limits``: claim nothing that would exceed them. ``held``: start no
        new session a spent period budget holds back. Nothing while claims are paused, or
        while an operator has drained this worker.
        """
        try:
            return await self._claim(worker_id, engines, only, limits, held)
        except _BranchBusy:
            return None

    async def _claim(
        self,
        worker_id: str,
        engines: Collection[str] | None,
        only: str | None,
        limits: Limits | None,
        held: Held | None,
    ) -> Claimed | None:
        now = time.time()
        pick = (
            select(sessions.c.id)
            .where(
                sessions.c.status == SessionStatus.QUEUED.value,
                sessions.c.available_at <= now,
            )
            .order_by(sessions.c.priority.desc(), sessions.c.available_at, sessions.c.created_at)
            .limit(1)
            .correlate(None)  # a subquery of the UPDATE below, over the table on its own
        )
        if engines is not None:
            pick = pick.where(sessions.c.engine.in_(list(engines)))
        # One branch, one writer: a session whose branch another is working on waits for it
        # (two requests on one pull request; the push's lease guards the rest).
        writing = (
            select(sessions.c.branch)
            .where(sessions.c.status == SessionStatus.RUNNING.value)
            .correlate(None)
        )
        pick = pick.where(sessions.c.branch.not_in(writing))
        if only is not None:
            pick = pick.where(sessions.c.id == only)
        # Paused: nothing is claimed, on any host (read in the same statement as the claim).
        pick = pick.where(not_paused())
        # Drained by an operator: this worker claims nothing (the same statement again).
        pick = pick.where(not_drained(worker_id))
        # A chat's next turn: on the remote worker that keeps its workspace, while it lives.
        pick = pick.where(not_held_elsewhere(worker_id, now, self.lease_seconds))
        if held is not None and held.active:
            pick = pick.where(claimable(held))
        if not self._db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        async with self._db.write() as conn:
            if limits is not None and limits.active:
                if not self._db.is_sqlite:
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_LOCK}
                    )
                running = sessions.c.status == SessionStatus.RUNNING.value
                if limits.max_running:
                    count = select(func.count()).select_from(sessions).where(running)
                    if (await conn.execute(count)).scalar_one() >= limits.max_running:
                        return None
                if limits.max_running_per_repo:
                    busy = (
                        select(sessions.c.repo)
                        .where(running)
                        .group_by(sessions.c.repo)
                        .having(func.count() >= limits.max_running_per_repo)
                        .correlate(None)
                    )
                    pick = pick.where(sessions.c.repo.not_in(busy))
            # One statement picks and takes the session (the subquery locks on PostgreSQL).
            claimed = await self._start(
                conn, sessions.c.id == pick.scalar_subquery(), worker_id, now
            )
            contended = claimed is not None and not self._db.is_sqlite
            if contended and claimed is not None and await _branch_taken(conn, claimed.session):
                raise _BranchBusy  # rolled back: it stays queued, the other writer first
            return claimed

    async def create_claimed(self, new: NewSession, worker_id: str) -> Claimed:
        """Enqueue and claim in one transaction: the caller runs it itself, nobody else can."""
        now = time.time()
        async with self._db.write() as conn:
            await conn.execute(insert(sessions).values(new_session_values(new, now)))
            await append_events(conn, new.id, None, [queued_event(new)], now=now)
            claimed = await self._start(conn, sessions.c.id == new.id, worker_id, now)
            assert claimed is not None
            return claimed

    async def adopt(
        self,
        new: NewSession,
        *,
        attempt: int,
        worker_id: str,
        keep: Collection[str] = (),
        run: Run | None = None,
        messages: Sequence[NewEvent] = (),
    ) -> Claimed:
        """Run here, as attempt ``attempt`` of ``worker_id``, a session another store queued
        (a remote worker's scratch store), with ``run``, the run it belongs to there (what
        the pipeline asks of it: its kind, its spec). What an earlier attempt of it left
        here, and the rows of every other session but those in ``keep`` (still running
        here), and of their runs, are removed first. ``new`` in ``keep``: its next turn, here
        again (a chat whose workspace this host keeps): its rows stay, and ``messages`` (what
        the turn answers, from the server) are added to its events."""
        now = time.time()
        again = new.id in keep
        gone = select(sessions.c.id).where(sessions.c.id.not_in([*keep]))
        async with self._db.write() as conn:
            for table in (event_rows, attempts):
                await conn.execute(delete(table).where(table.c.session_id.in_(gone)))
            await conn.execute(delete(sessions).where(sessions.c.id.in_(gone)))
            used = select(sessions.c.run_id).where(sessions.c.run_id.is_not(None))
            await conn.execute(delete(runs).where(runs.c.id.not_in(used)))
            if run is not None:
                await conn.execute(delete(runs).where(runs.c.id == run.id))
                await conn.execute(
                    insert(runs).values(
                        id=run.id,
                        kind=run.kind.value,
                        name=run.name,
                        status=run.status.value,
                        spec=dumps(run.spec),
                        job=run.job,
                        created_at=run.created_at,
                        updated_at=run.updated_at,
                        finished_at=run.finished_at,
                    )
                )
            values = new_session_values(new, now)
            if again:
                del values["id"], values["created_at"]
                which = sessions.c.id == new.id
                await conn.execute(
                    update(sessions).where(which).values(**values, attempt=attempt - 1)
                )
            else:
                await conn.execute(insert(sessions).values(**values, attempt=attempt - 1))
            if messages:
                await append_events(conn, new.id, None, messages, now=now)
            claimed = await self._start(conn, sessions.c.id == new.id, worker_id, now)
            assert claimed is not None
            return claimed

    async def _start(
        self, conn: AsyncConnection, which: Any, worker_id: str, now: float
    ) -> Claimed | None:
        """Move the session ``which`` selects to running, as a new attempt of ``worker_id``."""
        lease_until = now + self.lease_seconds
        row = (
            await conn.execute(
                update(sessions)
                .where(which)
                .values(
                    status=SessionStatus.RUNNING.value,
                    attempt=sessions.c.attempt + 1,
                    worker_id=worker_id,
                    lease_until=lease_until,
                    started_at=now,
                    updated_at=now,
                    error=None,
                    failure_kind=None,
                    last_seq=sessions.c.last_seq + 1,  # the "running" event below
                )
                .returning(*sessions.c)
            )
        ).first()
        if row is None:
            return None
        session = session_from_row(row)
        session_id = session.id
        lease = Lease(session_id=session_id, attempt=session.attempt, worker_id=worker_id)
        await conn.execute(
            insert(attempts).values(
                session_id=session_id,
                number=session.attempt,
                worker_id=worker_id,
                status=AttemptStatus.RUNNING.value,
                started_at=now,
                lease_until=lease_until,
                heartbeat_at=now,
                branch=session.branch,
            )
        )
        status = NewEvent(
            kind=EventKind.STATUS,
            data={"status": "running", "attempt": session.attempt, "worker": worker_id},
        )
        await insert_events(conn, session_id, session.attempt, row.last_seq, [status], now=now)
        return Claimed(session, lease)
