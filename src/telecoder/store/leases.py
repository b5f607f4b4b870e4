"""Leases: a running attempt renews its lease and writes its progress, fenced on the lease.

Every write for the attempt is fenced on (session, attempt, worker) and running status: the
session row is locked or updated on that condition first, in the same transaction, so a worker
that lost its lease writes nothing more (``LeaseLost``). ``attempt_update`` and
``hold_session`` are the fences the attempt's other writes (``completion``, ``recovery``) use.
Part of ``Queue`` (``store.queue``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import (
    AttemptStatus,
    EngineSource,
    Lease,
    Session,
    SessionStatus,
)
from telecoder.errors import LeaseLost
from telecoder.store.db import Database
from telecoder.store.events import fenced
from telecoder.store.rows import (
    session_from_row,
)
from telecoder.store.schema import attempts, sessions


@dataclass(frozen=True, slots=True)
class Heartbeat:
    lease_until: float
    cancel_requested: bool


class Leases:
    # The queue's state (``Queue.__init__``).
    _db: Database
    lease_seconds: float
    retry_backoff_seconds: float

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
                attempt_update(lease).values(lease_until=lease_until, heartbeat_at=now)
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

    async def hold(self, lease: Lease) -> Session:
        """The session, if ``lease`` still holds it; else LeaseLost."""
        async with self._db.read() as conn:
            return await hold_session(conn, lease)

    async def record(self, lease: Lease, **fields: Any) -> None:
        """Write progress of the attempt (workspace path, base sha, agent session id, …) while
        holding the lease."""
        async with self._db.write() as conn:
            await hold_session(conn, lease)
            await conn.execute(attempt_update(lease).values(**fields))

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


def attempt_update(lease: Lease) -> Any:
    return update(attempts).where(
        attempts.c.session_id == lease.session_id,
        attempts.c.number == lease.attempt,
        attempts.c.worker_id == lease.worker_id,
        attempts.c.status == AttemptStatus.RUNNING.value,
    )


async def hold_session(conn: AsyncConnection, lease: Lease) -> Session:
    """The session, locked for this transaction, if ``lease`` still holds it; else LeaseLost."""
    row = (
        await conn.execute(
            select(sessions).where(*fenced(lease)).with_for_update()  # type: ignore[arg-type]
        )
    ).first()
    if row is None:
        raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
    return session_from_row(row)
