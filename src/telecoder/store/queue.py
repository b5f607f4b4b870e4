"""The durable queue: claim with a lease, heartbeat, finish, recover expired leases.

A claim is one write transaction: pick the best queued session (SQLite holds the write lock from
``BEGIN IMMEDIATE``; PostgreSQL skips rows other claimers hold with ``FOR UPDATE SKIP LOCKED``),
move it to ``running`` with ``attempt + 1`` and a lease, and insert the attempt row. With
concurrency limits, PostgreSQL claimers first take one transaction-scoped advisory lock, so the
count of running sessions they check cannot change under them (SQLite's write lock already
serialises them).

Every later write for the attempt is fenced on (session, attempt, worker) and running status:
the session row is locked or updated on that condition first, in the same transaction, so a
worker that lost its lease writes nothing more. Completing an attempt records its result, its
pushed commit, its last events and the session's next state in one transaction.

An attempt that ends without finishing is classified: ``crashed`` when its worker stopped
renewing the lease (or restarted), ``stopped`` when the worker handed it back on purpose.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, insert, select, text, tuple_, update
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
from telecoder.store.budgets import Held, claimable
from telecoder.store.db import Database, dumps
from telecoder.store.events import append_events, fenced, insert_events
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.rows import (
    new_session_values,
    queued_event,
    session_from_row,
)
from telecoder.store.schema import attempts, sessions
from telecoder.store.transitions import status_changed

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


CRASHED = "crashed"  # the worker died or vanished: its lease expired, or it restarted
STOPPED = "stopped"  # the worker handed the session back on purpose (graceful shutdown)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How an attempt ended, as the worker reports it."""

    status: SessionStatus  # SUCCEEDED, FAILED, CANCELLED, or BLOCKED (a chat waits for a message)
    result: Result | None = None
    failure_kind: FailureKind | None = None
    error: str | None = None
    # None: the retry policy decides from ``failure_kind``; False: never retry this failure.
    retryable: bool | None = None
    pushed_sha: str | None = None  # what this attempt pushed (recorded with the completion)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    exit_code: int | None = None
    not_before: float | None = None  # retried: not before this time (a rate limit's end)
    question: str | None = None  # BLOCKED: what it asks a human (``telecoder.questions``)


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
        limits: Limits | None = None,
        held: Held | None = None,
    ) -> Claimed | None:
        """Take the best queued session that is due (or only the session ``only``), or None.

        Higher ``priority`` first, then the longest waiting. ``engines``: only sessions of
        these engines. ``limits``: claim nothing that would exceed them. ``held``: start no
        new session a spent period budget holds back.
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

    async def renew(self, leases: Sequence[Lease]) -> dict[str, Heartbeat]:
        """Renew many leases of one worker in one transaction (two statements, whatever their
        number): the heartbeat of each, by session id; a lease missing from the answer is lost
        (another worker has its session now, or it ended)."""
        if not leases:
            return {}
        worker_ids = {lease.worker_id for lease in leases}
        if len(worker_ids) != 1:
            raise ValueError("renew() takes the leases of one worker")
        [worker_id] = worker_ids
        now = time.time()
        lease_until = now + self.lease_seconds
        keys = [(lease.session_id, lease.attempt) for lease in leases]
        async with self._db.write() as conn:
            held = (
                await conn.execute(
                    update(sessions)
                    .where(
                        tuple_(sessions.c.id, sessions.c.attempt).in_(keys),
                        sessions.c.worker_id == worker_id,
                        sessions.c.status == SessionStatus.RUNNING.value,
                    )
                    .values(lease_until=lease_until)
                    .returning(sessions.c.id, sessions.c.attempt, sessions.c.cancel_requested)
                )
            ).all()
            if held:
                await conn.execute(
                    update(attempts)
                    .where(
                        tuple_(attempts.c.session_id, attempts.c.number).in_(
                            [(row.id, row.attempt) for row in held]
                        ),
                        attempts.c.worker_id == worker_id,
                        attempts.c.status == AttemptStatus.RUNNING.value,
                    )
                    .values(lease_until=lease_until, heartbeat_at=now)
                )
        return {row.id: Heartbeat(lease_until, bool(row.cancel_requested)) for row in held}

    async def record(self, lease: Lease, **fields: Any) -> None:
        """Write progress of the attempt (workspace path, base sha, agent session id, …) while
        holding the lease."""
        async with self._db.write() as conn:
            await _hold(conn, lease)
            await conn.execute(_attempt_update(lease).values(**fields))

    async def record_budget(self, lease: Lease, budget_usd: float | None) -> None:
        """Write the budget in force on the session (the repository's or the settings'), so
        the gateway, ``show`` and a raise see the figure the attempt runs under."""
        async with self._db.write() as conn:
            done = await conn.execute(
                update(sessions)
                .where(*fenced(lease))  # type: ignore[arg-type]
                .values(budget_usd=budget_usd, updated_at=time.time())
            )
            if not done.rowcount:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")

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
        """End the attempt: the session succeeds, fails, is retried later, or is dead.

        ``events`` (the attempt's last ones), the result, the pushed commit and the session's
        next state are written in one transaction, and only while the lease holds.
        """
        now = time.time()
        async with self._db.write() as conn:
            status, delay = outcome.status, 0.0
            where = fenced(lease)
            if status == SessionStatus.FAILED:
                session = await _hold(conn, lease)  # the retry decision needs the session
                kind = outcome.failure_kind or FailureKind.INTERNAL
                # A rate-limited attempt does not count against max_attempts: the task did
                # nothing wrong and the gateway already waited for the endpoint; counting it
                # would kill sessions during any outage longer than a few retries. Its own cap
                # (retry.RATE_LIMITED_REQUEUES) ends a key that stays limited.
                used = await _attempts_used(conn, lease)
                limited = await _rate_limited_attempts(conn, lease)
                if kind == FailureKind.RATE_LIMITED:
                    used, limited = used - 1, limited + 1  # this one too
                decision = retry.decide(
                    kind,
                    attempt=used,
                    max_attempts=session.max_attempts,
                    retryable=outcome.retryable,
                )
                if kind == FailureKind.RATE_LIMITED and limited > retry.RATE_LIMITED_REQUEUES:
                    decision = retry.RetryDecision(SessionStatus.DEAD)
                status, delay = decision.status, decision.delay
                if status == SessionStatus.QUEUED and outcome.not_before is not None:
                    delay = max(delay, outcome.not_before - now)
            status_data: dict[str, Any] = {"status": status.value}
            if outcome.failure_kind is not None:
                status_data["failure_kind"] = outcome.failure_kind.value
            if outcome.error:
                status_data["error"] = outcome.error
            if status == SessionStatus.QUEUED:
                status_data["retry_in"] = round(delay, 3)
            if status == SessionStatus.BLOCKED:
                budget = outcome.failure_kind == FailureKind.BUDGET_REACHED
                status_data["reason"] = outcome.error if budget else "waiting for a message"
                if outcome.question:
                    status_data["question"] = outcome.question
                    if not budget:
                        status_data["reason"] = "waiting for an answer"
            new = [*events, NewEvent(kind=EventKind.STATUS, data=status_data)]
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
                "last_seq": sessions.c.last_seq + len(new),
                "question": outcome.question if status == SessionStatus.BLOCKED else None,
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
                    .where(*where)  # type: ignore[arg-type]
                    .values(**values)
                    .returning(*sessions.c)
                )
            ).first()
            if row is None:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
            await insert_events(conn, lease.session_id, lease.attempt, row.last_seq, new, now=now)
            await conn.execute(
                _attempt_update(lease).values(
                    status=_attempt_status(outcome.status).value,
                    finished_at=now,
                    failure_kind=outcome.failure_kind.value if outcome.failure_kind else None,
                    error=outcome.error,
                    exit_code=outcome.exit_code,
                    commit_sha=outcome.result.commit if outcome.result else None,
                    pushed_sha=outcome.pushed_sha,
                )
            )
            if status == SessionStatus.QUEUED and delay <= 0:
                await self._db.notify(conn, Notice(NoticeKind.QUEUED, lease.session_id))
            ended = session_from_row(row)
            await status_changed(conn, self._db, ended, now)  # notifications out, dependants
        return ended

    async def release(self, lease: Lease, reason: str, events: Sequence[NewEvent] = ()) -> bool:
        """Hand a running session back to the queue on purpose (graceful shutdown).

        The attempt is marked ``released`` and does not count against ``max_attempts``.
        """
        now = time.time()
        status = NewEvent(
            kind=EventKind.STATUS,
            data={"status": "queued", "reason": reason, "interrupted": STOPPED},
        )
        async with self._db.write() as conn:
            try:
                await append_events(conn, lease.session_id, lease, [*events, status], now=now)
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
            await self._db.notify(conn, Notice(NoticeKind.QUEUED, lease.session_id))
        return True

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
                kind, attempt=await _attempts_used(conn, lease), max_attempts=session.max_attempts
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
        await conn.execute(
            _attempt_update(lease).values(
                status=AttemptStatus.LOST.value,
                finished_at=now,
                failure_kind=FailureKind.WORKER_LOST.value,
                error=error,
            )
        )


def _attempt_update(lease: Lease) -> Any:
    return update(attempts).where(
        attempts.c.session_id == lease.session_id,
        attempts.c.number == lease.attempt,
        attempts.c.worker_id == lease.worker_id,
        attempts.c.status == AttemptStatus.RUNNING.value,
    )


async def _attempts_used(conn: AsyncConnection, lease: Lease) -> int:
    """Attempts that count against ``max_attempts``: all but those handed back at shutdown
    and those that ended rate-limited."""
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
    return lease.attempt - int(released) - await _rate_limited_attempts(conn, lease)


async def _rate_limited_attempts(conn: AsyncConnection, lease: Lease) -> int:
    """Earlier attempts of the session that ended rate-limited."""
    found = (
        await conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(
                attempts.c.session_id == lease.session_id,
                attempts.c.failure_kind == FailureKind.RATE_LIMITED.value,
            )
        )
    ).scalar_one()
    return int(found)


async def _hold(conn: AsyncConnection, lease: Lease) -> Session:
    """The session, locked for this transaction, if ``lease`` still holds it; else LeaseLost."""
    row = (
        await conn.execute(
            select(sessions).where(*fenced(lease)).with_for_update()  # type: ignore[arg-type]
        )
    ).first()
    if row is None:
        raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
    return session_from_row(row)


def _attempt_status(status: SessionStatus) -> AttemptStatus:
    return {
        SessionStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
        SessionStatus.BLOCKED: AttemptStatus.SUCCEEDED,  # a chat's turn that went well
        SessionStatus.CANCELLED: AttemptStatus.CANCELLED,
    }.get(status, AttemptStatus.FAILED)
