"""The durable queue: claim with a lease, heartbeat, finish, recover expired leases.

A claim is one write transaction: pick the best queued session (SQLite holds the write lock from
``BEGIN IMMEDIATE``; PostgreSQL skips rows other claimers hold with ``FOR UPDATE SKIP LOCKED``),
move it to ``running`` with ``attempt + 1`` and a lease, and insert the attempt row. Every later
write for the attempt is fenced on (session, attempt, worker) and running status: a worker that
lost its lease writes nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder import retry
from telecoder.domain import (
    AttemptStatus,
    EngineSource,
    EventKind,
    FailureKind,
    Lease,
    NewEvent,
    NewSession,
    Result,
    Session,
    SessionStatus,
)
from telecoder.errors import LeaseLost
from telecoder.store.db import Database, dumps
from telecoder.store.events import append_events, fenced
from telecoder.store.schema import attempts, sessions
from telecoder.store.sessions import (
    new_session_values,
    queued_event,
    session_from_row,
)


@dataclass(frozen=True, slots=True)
class Claimed:
    session: Session
    lease: Lease


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How an attempt ended, as the worker reports it."""

    status: SessionStatus  # SUCCEEDED, FAILED, CANCELLED, or BLOCKED (a chat waits for a message)
    result: Result | None = None
    failure_kind: FailureKind | None = None
    error: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    lease_until: float
    cancel_requested: bool


class Queue:
    def __init__(self, db: Database, *, lease_seconds: float) -> None:
        self._db = db
        self.lease_seconds = lease_seconds

    async def claim(
        self,
        worker_id: str,
        *,
        engines: Collection[str] | None = None,
        only: str | None = None,
    ) -> Claimed | None:
        """Take the best queued session that is due (or only the session ``only``), or None."""
        now = time.time()
        pick = (
            select(sessions.c.id)
            .where(
                sessions.c.status == SessionStatus.QUEUED.value,
                sessions.c.available_at <= now,
            )
            .order_by(sessions.c.priority.desc(), sessions.c.available_at, sessions.c.created_at)
            .limit(1)
        )
        if engines is not None:
            pick = pick.where(sessions.c.engine.in_(list(engines)))
        if only is not None:
            pick = pick.where(sessions.c.id == only)
        if not self._db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        async with self._db.write() as conn:
            session_id = (await conn.execute(pick)).scalar()
            if session_id is None:
                return None
            return await self._start(conn, session_id, worker_id, now)

    async def create_claimed(self, new: NewSession, worker_id: str) -> Claimed:
        """Enqueue and claim in one transaction: the caller runs it itself, nobody else can."""
        now = time.time()
        async with self._db.write() as conn:
            await conn.execute(insert(sessions).values(new_session_values(new, now)))
            await append_events(conn, new.id, None, [queued_event(new)], now=now)
            return await self._start(conn, new.id, worker_id, now)

    async def _start(
        self, conn: AsyncConnection, session_id: str, worker_id: str, now: float
    ) -> Claimed:
        lease_until = now + self.lease_seconds
        row = (
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id)
                .values(
                    status=SessionStatus.RUNNING.value,
                    attempt=sessions.c.attempt + 1,
                    worker_id=worker_id,
                    lease_until=lease_until,
                    started_at=now,
                    updated_at=now,
                    error=None,
                    failure_kind=None,
                )
                .returning(*sessions.c)
            )
        ).one()
        session = session_from_row(row)
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
        await append_events(conn, session_id, lease, [status], now=now)
        return Claimed(session, lease)

    async def heartbeat(self, lease: Lease) -> Heartbeat:
        """Renew the lease; raises LeaseLost if another worker has the session now."""
        now = time.time()
        lease_until = now + self.lease_seconds
        async with self._db.write() as conn:
            cancel = (
                await conn.execute(
                    update(sessions)
                    .where(*fenced(lease))  # type: ignore[arg-type]
                    .values(lease_until=lease_until)
                    .returning(sessions.c.cancel_requested)
                )
            ).scalar()
            if cancel is None:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
            await conn.execute(
                _attempt_update(lease).values(lease_until=lease_until, heartbeat_at=now)
            )
        return Heartbeat(lease_until, bool(cancel))

    async def record(self, lease: Lease, **fields: Any) -> None:
        """Write progress of the attempt (workspace path, base sha, agent session id, …)."""
        async with self._db.write() as conn:
            await _hold(conn, lease)
            await conn.execute(_attempt_update(lease).values(**fields))

    async def choose_engine(self, lease: Lease, engine: str, source: EngineSource) -> None:
        """Record the engine the attempt runs, when the repository chose it."""
        async with self._db.write() as conn:
            done = await conn.execute(
                update(sessions)
                .where(*fenced(lease))  # type: ignore[arg-type]
                .values(engine=engine, engine_source=source.value, updated_at=time.time())
            )
            if not done.rowcount:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")

    async def finish(
        self, lease: Lease, outcome: Outcome, events: Sequence[NewEvent] = ()
    ) -> Session:
        """End the attempt: the session succeeds, fails, is retried later, or is dead."""
        now = time.time()
        async with self._db.write() as conn:
            current = (
                await conn.execute(select(sessions).where(*fenced(lease)))  # type: ignore[arg-type]
            ).first()
            if current is None:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
            session = session_from_row(current)
            status, delay = outcome.status, 0.0
            if status == SessionStatus.FAILED:
                decision = retry.decide(
                    outcome.failure_kind or FailureKind.INTERNAL,
                    attempt=await _attempts_used(conn, lease),
                    max_attempts=session.max_attempts,
                )
                status, delay = decision.status, decision.delay
            status_data: dict[str, Any] = {"status": status.value}
            if outcome.failure_kind is not None:
                status_data["failure_kind"] = outcome.failure_kind.value
            if outcome.error:
                status_data["error"] = outcome.error
            if status == SessionStatus.QUEUED:
                status_data["retry_in"] = round(delay, 3)
            if status == SessionStatus.BLOCKED:
                status_data["reason"] = "waiting for a message"
            await append_events(
                conn,
                lease.session_id,
                lease,
                [*events, NewEvent(kind=EventKind.STATUS, data=status_data)],
                now=now,
            )
            values: dict[str, Any] = {
                "status": status.value,
                "worker_id": None,
                "lease_until": None,
                "updated_at": now,
                "error": outcome.error,
                "failure_kind": outcome.failure_kind.value if outcome.failure_kind else None,
                "cost_usd": sessions.c.cost_usd + outcome.cost_usd,
                "input_tokens": sessions.c.input_tokens + outcome.input_tokens,
                "output_tokens": sessions.c.output_tokens + outcome.output_tokens,
            }
            if outcome.result is not None:
                values["result"] = dumps(outcome.result.to_dict())
            if status == SessionStatus.QUEUED:
                values["available_at"] = now + delay
            elif status.terminal:
                values["finished_at"] = now
            row = (
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.id == lease.session_id)
                    .values(**values)
                    .returning(*sessions.c)
                )
            ).one()
            await conn.execute(
                _attempt_update(lease).values(
                    status=_attempt_status(outcome.status).value,
                    finished_at=now,
                    failure_kind=outcome.failure_kind.value if outcome.failure_kind else None,
                    error=outcome.error,
                    exit_code=outcome.exit_code,
                    commit_sha=outcome.result.commit if outcome.result else None,
                )
            )
        return session_from_row(row)

    async def release(self, lease: Lease, reason: str) -> bool:
        """Hand a running session back to the queue (graceful shutdown).

        The attempt is marked ``released`` and does not count against ``max_attempts``.
        """
        now = time.time()
        async with self._db.write() as conn:
            try:
                await append_events(
                    conn,
                    lease.session_id,
                    lease,
                    [NewEvent(kind=EventKind.STATUS, data={"status": "queued", "reason": reason})],
                    now=now,
                )
            except LeaseLost:
                return False
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == lease.session_id)
                .values(
                    status=SessionStatus.QUEUED.value,
                    worker_id=None,
                    lease_until=None,
                    available_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                _attempt_update(lease).values(
                    status=AttemptStatus.RELEASED.value, finished_at=now, error=reason
                )
            )
        return True

    async def recover_expired(self) -> list[str]:
        """Sessions whose worker stopped renewing: retry them later, or declare them dead."""
        now = time.time()
        recovered: list[str] = []
        async with self._db.write() as conn:
            rows = (
                await conn.execute(
                    select(sessions).where(
                        sessions.c.status == SessionStatus.RUNNING.value,
                        sessions.c.lease_until < now,
                    )
                )
            ).all()
            for row in rows:
                session = session_from_row(row)
                assert session.worker_id is not None
                lease = Lease(
                    session_id=session.id, attempt=session.attempt, worker_id=session.worker_id
                )
                decision = retry.decide(
                    FailureKind.WORKER_LOST,
                    attempt=await _attempts_used(conn, lease),
                    max_attempts=session.max_attempts,
                )
                error = f"worker {session.worker_id} stopped renewing its lease"
                data: dict[str, Any] = {
                    "status": decision.status.value,
                    "failure_kind": FailureKind.WORKER_LOST.value,
                    "error": error,
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
                    "failure_kind": FailureKind.WORKER_LOST.value,
                    "error": error,
                }
                if decision.status == SessionStatus.QUEUED:
                    values["available_at"] = now + decision.delay
                else:
                    values["finished_at"] = now
                await conn.execute(
                    update(sessions).where(sessions.c.id == session.id).values(**values)
                )
                await conn.execute(
                    _attempt_update(lease).values(
                        status=AttemptStatus.LOST.value,
                        finished_at=now,
                        failure_kind=FailureKind.WORKER_LOST.value,
                        error=error,
                    )
                )
                recovered.append(session.id)
        return recovered


def _attempt_update(lease: Lease) -> Any:
    return update(attempts).where(
        attempts.c.session_id == lease.session_id,
        attempts.c.number == lease.attempt,
        attempts.c.worker_id == lease.worker_id,
    )


async def _attempts_used(conn: AsyncConnection, lease: Lease) -> int:
    """Attempts that count against ``max_attempts``: all but those handed back at shutdown."""
    released = (
        await conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(
                attempts.c.session_id == lease.session_id,
                attempts.c.status == AttemptStatus.RELEASED.value,
            )
        )
    ).scalar_one()
    return lease.attempt - int(released)


async def _hold(conn: AsyncConnection, lease: Lease) -> None:
    held = (
        await conn.execute(select(sessions.c.id).where(*fenced(lease)))  # type: ignore[arg-type]
    ).first()
    if held is None:
        raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")


def _attempt_status(status: SessionStatus) -> AttemptStatus:
    return {
        SessionStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
        SessionStatus.BLOCKED: AttemptStatus.SUCCEEDED,  # a chat's turn that went well
        SessionStatus.CANCELLED: AttemptStatus.CANCELLED,
    }.get(status, AttemptStatus.FAILED)
