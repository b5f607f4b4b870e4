"""Completion: an attempt ends, by its worker's report (``finish``) or handed back (``release``).

Completing an attempt records its result, its pushed commit, its last events and the session's
next state (succeeded, failed, blocked, retried later, or dead: ``retry``) in one transaction,
fenced on the lease. An attempt handed back on purpose (graceful shutdown) is ``stopped``: it
is requeued and does not count against ``max_attempts``. Part of ``Queue`` (``store.queue``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder import retry
from telecoder.domain import (
    AttemptStatus,
    EventKind,
    FailureKind,
    Lease,
    NewEvent,
    Result,
    Session,
    SessionStatus,
)
from telecoder.errors import LeaseLost
from telecoder.store.db import Database, dumps
from telecoder.store.events import append_events, fenced, insert_events
from telecoder.store.leases import attempt_update, hold_session
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.rows import (
    session_from_row,
)
from telecoder.store.schema import attempts, sessions, usage
from telecoder.store.transitions import status_changed

STOPPED = "stopped"  # the worker handed the session back on purpose (graceful shutdown)


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


class Completion:
    # The queue's state (``Queue.__init__``).
    _db: Database
    lease_seconds: float
    retry_backoff_seconds: float

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
                session = await hold_session(conn, lease)  # the retry decision needs the session
                kind = outcome.failure_kind or FailureKind.INTERNAL
                # A rate-limited attempt does not count against max_attempts: the task did
                # nothing wrong and the gateway already waited for the endpoint; counting it
                # would kill sessions during any outage longer than a few retries. Its own cap
                # (retry.RATE_LIMITED_REQUEUES) ends a key that stays limited.
                used = await attempts_used(conn, lease)
                limited = await _rate_limited_attempts(conn, lease)
                if kind == FailureKind.RATE_LIMITED:
                    used, limited = used - 1, limited + 1  # this one too
                decision = retry.decide(
                    kind,
                    attempt=used,
                    max_attempts=session.max_attempts,
                    retryable=outcome.retryable,
                    base=self.retry_backoff_seconds,
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
                # A session that named no model reports the one that answered it (metered by
                # the gateway); set only at the end, so a retry is routed as before.
                values["model"] = func.coalesce(sessions.c.model, _model_used(lease.session_id))
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
                attempt_update(lease).values(
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
                attempt_update(lease).values(
                    status=AttemptStatus.RELEASED.value, finished_at=now, error=reason
                )
            )
            await self._db.notify(conn, Notice(NoticeKind.QUEUED, lease.session_id))
        return True


async def attempts_used(conn: AsyncConnection, lease: Lease) -> int:
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


def _attempt_status(status: SessionStatus) -> AttemptStatus:
    return {
        SessionStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
        SessionStatus.BLOCKED: AttemptStatus.SUCCEEDED,  # a chat's turn that went well
        SessionStatus.CANCELLED: AttemptStatus.CANCELLED,
    }.get(status, AttemptStatus.FAILED)


def _model_used(session_id: str) -> Any:
    """The model that answered most of the session's requests (None: no metered request)."""
    return (
        select(usage.c.model)
        .where(usage.c.session_id == session_id, usage.c.status < 400, usage.c.model.is_not(None))
        .group_by(usage.c.model)
        .order_by(func.count().desc(), func.min(usage.c.id))
        .limit(1)
        .scalar_subquery()
    )
