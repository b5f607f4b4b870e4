"""The workers table: each worker process registers, renews a heartbeat, and signs off.

A worker is ``idle`` or ``working`` while it runs, ``draining`` while it shuts down and
``offline`` once it has exited. One that dies without signing off keeps its last state in the
table, so readers call it ``offline`` when its heartbeat is older than ``stale_after`` seconds.

A worker id names one worker at a time: registering an id whose row is still alive — on another
host, or on this host under a live process — is refused, because leases are fenced on the id.
A row left behind by a crashed process of this host is taken over: that is a restart.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, insert, select, update

from telecoder.domain import WorkerInfo, WorkerState
from telecoder.errors import Conflict
from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import workers

# Rows of workers gone for this long are deleted when a worker registers.
FORGET_AFTER_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Registration:
    """What registering found: whether this id's previous process ended without signing off."""

    restarted_after_crash: bool


class Workers:
    def __init__(self, db: Database, *, stale_after: float) -> None:
        self._db = db
        self.stale_after = stale_after

    async def register(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        capacity: int,
        engines: Collection[str],
    ) -> Registration:
        now = time.time()
        async with self._db.write() as conn:
            await conn.execute(
                delete(workers).where(
                    workers.c.last_heartbeat < now - FORGET_AFTER_SECONDS, workers.c.id != worker_id
                )
            )
            row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).first()
            values: dict[str, Any] = {
                "host": host,
                "pid": pid,
                "capacity": capacity,
                "engines": dumps(sorted(engines)),
                "state": WorkerState.IDLE.value,
                "running": 0,
                "started_at": now,
                "last_heartbeat": now,
            }
            if row is None:
                await conn.execute(insert(workers).values(id=worker_id, **values))
                return Registration(restarted_after_crash=False)
            previous = _info(row, now, self.stale_after)
            if previous.state != WorkerState.OFFLINE and _alive_elsewhere(previous, host, pid):
                raise Conflict(
                    f"worker id {worker_id!r} is in use by pid {previous.pid} on "
                    f"{previous.host}: give each worker its own TELECODER_WORKER_ID"
                )
            await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
            return Registration(restarted_after_crash=row.state != WorkerState.OFFLINE.value)

    async def beat(self, worker_id: str, *, state: WorkerState, running: int) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(workers)
                .where(workers.c.id == worker_id)
                .values(state=state.value, running=running, last_heartbeat=time.time())
            )

    async def list(self, *, include_offline: bool = True) -> list[WorkerInfo]:
        now = time.time()
        query = select(workers).order_by(workers.c.started_at.desc(), workers.c.id)
        if not include_offline:
            query = query.where(
                workers.c.state != WorkerState.OFFLINE.value,
                workers.c.last_heartbeat >= now - self.stale_after,
            )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_info(r, now, self.stale_after) for r in rows]

    async def live(self) -> builtins.list[WorkerInfo]:
        """Workers that are up (idle, working or draining) by their recent heartbeat."""
        return await self.list(include_offline=False)


def _info(row: Row[Any], now: float, stale_after: float) -> WorkerInfo:
    m = row._mapping
    state = WorkerState(m["state"])
    if m["last_heartbeat"] < now - stale_after:
        state = WorkerState.OFFLINE
    return WorkerInfo(
        id=m["id"],
        host=m["host"],
        pid=m["pid"],
        capacity=m["capacity"],
        engines=tuple(loads(m["engines"]) or ()),
        state=state,
        running=m["running"] if state != WorkerState.OFFLINE else 0,
        started_at=m["started_at"],
        last_heartbeat=m["last_heartbeat"],
    )


def _alive_elsewhere(previous: WorkerInfo, host: str, pid: int) -> bool:
    """Whether the registered process is another live process (not us, not a dead one)."""
    if previous.host != host:
        return True
    if previous.pid == pid:
        return False
    try:
        os.kill(previous.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
