"""Cron jobs' state: paused or not, consecutive failures, and the slots fired.

A slot is claimed by ``Runs.create(..., slot=(job, slot))`` in the transaction that creates its
run. ``count`` folds the job's runs that ended since the last count into ``failures`` (a failed
run adds one, a succeeded one resets it; a cancelled one changes nothing) and pauses the job at
the limit; it is guarded by ``counted_at``, so schedulers counting at once count each run once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from telecoder.domain import RunStatus
from telecoder.store.db import Database
from telecoder.store.schema import job_slots, job_state, runs


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    job: str
    paused: bool = False
    paused_reason: str | None = None
    failures: int = 0
    since: float = 0.0
    counted_at: float | None = None
    updated_at: float = 0.0
    user: str | None = None  # who defined it over the API; its runs are theirs

    def to_dict(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "failures": self.failures,
        }


def _state(row: Any) -> JobState:
    m = row._mapping
    return JobState(
        job=m["job"],
        paused=bool(m["paused"]),
        paused_reason=m["paused_reason"],
        failures=m["failures"],
        since=m["since"] or 0.0,
        counted_at=m["counted_at"],
        updated_at=m["updated_at"],
        user=m["user"],
    )


class Jobs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure(self, job: str, now: float | None = None) -> JobState:
        """The job's state, made (slots after ``now`` may fire) when it has none."""
        found = await self.get(job)  # a read: the scheduler asks every tick
        if found is not None:
            return found
        now = time.time() if now is None else now
        dialect: Any = sqlite if self._db.is_sqlite else postgresql
        async with self._db.write() as conn:
            await conn.execute(
                dialect.insert(job_state)
                .values(job=job, since=now, counted_at=now, updated_at=now)
                .on_conflict_do_nothing()
            )
            row = (await conn.execute(select(job_state).where(job_state.c.job == job))).one()
        return _state(row)

    async def get(self, job: str) -> JobState | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(job_state).where(job_state.c.job == job))).first()
        return None if row is None else _state(row)

    async def last_slot(self, job: str) -> float | None:
        async with self._db.read() as conn:
            return (  # type: ignore[no-any-return]
                await conn.execute(select(func.max(job_slots.c.slot)).where(job_slots.c.job == job))
            ).scalar()

    async def skip_slot(self, job: str, slot: float) -> bool:
        """Claim ``slot`` without a run (its firing failed before a run existed)."""
        dialect: Any = sqlite if self._db.is_sqlite else postgresql
        async with self._db.write() as conn:
            done = await conn.execute(
                dialect.insert(job_slots)
                .values(job=job, slot=slot, run_id=None, created_at=time.time())
                .on_conflict_do_nothing()
                .returning(job_slots.c.job)
            )
            return done.first() is not None

    async def pause(self, job: str, reason: str) -> JobState:
        await self.ensure(job)
        async with self._db.write() as conn:
            await conn.execute(
                update(job_state)
                .where(job_state.c.job == job)
                .values(paused=True, paused_reason=reason, updated_at=time.time())
            )
        return await self.ensure(job)

    async def resume(self, job: str) -> JobState:
        """Unpause, forget the failures; slots missed while paused do not fire."""
        now = time.time()
        await self.ensure(job, now)
        async with self._db.write() as conn:
            await conn.execute(
                update(job_state)
                .where(job_state.c.job == job)
                .values(paused=False, paused_reason=None, failures=0, since=now, updated_at=now)
            )
        return await self.ensure(job)

    async def own(self, job: str, user: str | None) -> JobState:
        """Record who defined ``job`` (None: no one's, an admin's file)."""
        await self.ensure(job)
        async with self._db.write() as conn:
            await conn.execute(
                update(job_state)
                .where(job_state.c.job == job)
                .values(user=user, updated_at=time.time())
            )
        return await self.ensure(job)

    async def forget(self, job: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(job_state).where(job_state.c.job == job))

    async def fail(self, job: str, reason: str, limit: int) -> JobState:
        """A firing that made no run (the task was refused) counts as a failed run."""
        state = await self.ensure(job)
        failures = state.failures + 1
        values: dict[str, Any] = {"failures": failures, "updated_at": time.time()}
        if failures >= limit and not state.paused:
            values.update(paused=True, paused_reason=_reason(failures, reason))
        async with self._db.write() as conn:
            await conn.execute(update(job_state).where(job_state.c.job == job).values(values))
        return await self.ensure(job)

    async def count(self, job: str, limit: int) -> tuple[JobState, bool]:
        """Fold the job's runs that ended since the last count into its failures; pause it at
        ``limit`` consecutive failed runs. Returns the state and whether this call paused it."""
        state = await self.ensure(job)
        since = state.counted_at if state.counted_at is not None else state.since
        async with self._db.read() as conn:
            ended = (
                await conn.execute(
                    select(runs.c.id, runs.c.status, runs.c.finished_at)
                    .where(runs.c.job == job, runs.c.finished_at > since)
                    .order_by(runs.c.finished_at, runs.c.id)
                )
            ).all()
        if not ended:
            return state, False
        failures, last_failed = state.failures, None
        for r in ended:
            if r.status == RunStatus.FAILED.value:
                failures, last_failed = failures + 1, r.id
            elif r.status == RunStatus.SUCCEEDED.value:
                failures = 0
        now = time.time()
        values: dict[str, Any] = {
            "failures": failures,
            "counted_at": ended[-1].finished_at,
            "updated_at": now,
        }
        pausing = failures >= limit and not state.paused
        if pausing:
            values.update(
                paused=True, paused_reason=_reason(failures, f"the last, run {last_failed}")
            )
        guard = (
            job_state.c.counted_at.is_(None)
            if state.counted_at is None
            else job_state.c.counted_at == state.counted_at
        )
        async with self._db.write() as conn:
            done = await conn.execute(
                update(job_state)
                .where(job_state.c.job == job, guard)
                .values(values)
                .returning(job_state.c.job)
            )
            won = done.first() is not None
        after = await self.ensure(job)
        return after, pausing and won


def _reason(failures: int, detail: str) -> str:
    return f"paused itself after {failures} consecutive failed runs ({detail})"
