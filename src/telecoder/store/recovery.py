"""Recovery: the attempts whose worker died or vanished (``crashed``).

A worker that stopped renewing its lease (``recover_expired``), or restarted
(``recover_worker``), leaves its sessions running: each is retried later or declared dead, as
``retry`` decides, unless a cancel was requested meanwhile. Part of ``Queue`` (``store.queue``).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder import retry
from telecoder.domain import (
    AttemptStatus,
    EventKind,
    FailureKind,
    Lease,
    NewEvent,
    SessionStatus,
)
from telecoder.store.completion import attempts_used
from telecoder.store.db import Database
from telecoder.store.events import append_events
from telecoder.store.health import record_in
from telecoder.store.leases import attempt_update
from telecoder.store.rows import (
    session_from_row,
)
from telecoder.store.schema import sessions
from telecoder.store.transitions import status_changed

CRASHED = "crashed"  # the worker died or vanished: its lease expired, or it restarted


class Recovery:
    # The queue's state (``Queue.__init__``).
    _db: Database
    lease_seconds: float
    retry_backoff_seconds: float

    async def recover_expired(self) -> list[str]:
        """Sessions whose worker stopped renewing: retry them later, or declare them dead."""
        now = time.time()
        expired = [
            sessions.c.status == SessionStatus.RUNNING.value,
            sessions.c.lease_until < now,
        ]
        async with self._db.read() as conn:
            found = (await conn.execute(select(sessions.c.id).where(*expired).limit(1))).first()
        if found is None:  # the common case: no write transaction at all
            return []
        query = select(sessions).where(*expired)
        if not self._db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self._db.write() as conn:
            rows = (await conn.execute(query)).all()
            for row in rows:
                error = f"worker {row.worker_id} stopped renewing its lease"
                await self._recover(conn, row, error, now)
        return [row.id for row in rows]

    async def recover_worker(self, worker_id: str) -> list[str]:
        """Sessions a previous process of ``worker_id`` was running when it died.

        Called when a worker starts: it runs nothing yet, so whatever still runs under its id
        was interrupted by a crash, and need not wait for the lease to expire.
        """
        now = time.time()
        query = select(sessions).where(
            sessions.c.status == SessionStatus.RUNNING.value, sessions.c.worker_id == worker_id
        )
        if not self._db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self._db.write() as conn:
            rows = (await conn.execute(query)).all()
            for row in rows:
                error = f"worker {worker_id} restarted: its previous process crashed"
                await self._recover(conn, row, error, now)
        return [row.id for row in rows]

    async def _recover(self, conn: AsyncConnection, row: Row[Any], error: str, now: float) -> None:
        session = session_from_row(row)
        assert session.worker_id is not None
        lease = Lease(session_id=session.id, attempt=session.attempt, worker_id=session.worker_id)
        if session.cancel_requested:
            # Cancelled while it ran: the cancel stands, whatever became of the worker.
            kind, decision = FailureKind.CANCELLED, retry.RetryDecision(SessionStatus.CANCELLED)
            error = f"cancelled by request ({error})"
        else:
            kind = FailureKind.WORKER_LOST
            decision = retry.decide(
                kind,
                attempt=await attempts_used(conn, lease),
                max_attempts=session.max_attempts,
                base=self.retry_backoff_seconds,
            )
        data: dict[str, Any] = {
            "status": decision.status.value,
            "failure_kind": kind.value,
            "error": error,
            "interrupted": CRASHED,
        }
        if decision.status == SessionStatus.QUEUED:
            data["retry_in"] = round(decision.delay, 3)
        await append_events(
            conn, session.id, lease, [NewEvent(kind=EventKind.STATUS, data=data)], now=now
        )
        values: dict[str, Any] = {
            "status": decision.status.value,
            "worker_id": None,
            "lease_until": None,
            "updated_at": now,
            "failure_kind": kind.value,
            "error": error,
        }
        if decision.status == SessionStatus.QUEUED:
            values["available_at"] = now + decision.delay
        else:
            values["finished_at"] = now
        row = (
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == session.id)
                .values(**values)
                .returning(*sessions.c)
            )
        ).one()
        await status_changed(conn, self._db, session_from_row(row), now)
        requeued = decision.status == SessionStatus.QUEUED
        await record_in(
            conn,
            "requeued" if requeued else "recovered",
            session.id,
            now,
            worker=session.worker_id,
            attempt=session.attempt,
            status=decision.status.value,
            error=error,
        )
        await conn.execute(
            attempt_update(lease).values(
                status=AttemptStatus.LOST.value,
                finished_at=now,
                failure_kind=FailureKind.WORKER_LOST.value,
                error=error,
            )
        )
