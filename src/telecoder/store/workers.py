"""The workers table: each worker process registers, renews a heartbeat, and signs off.

A worker is ``idle`` or ``working`` while it runs, ``draining`` while it shuts down and
``offline`` once it has exited. One that dies without signing off keeps its last state in the
table, so readers call it ``offline`` when its heartbeat is older than ``stale_after`` seconds.

A worker id names one worker at a time: registering an id whose row is still alive — on another
host, or on this host under a live process — is refused, because leases are fenced on the id.
A row left behind by a crashed process of this host is taken over: that is a restart.

An operator drains a worker (``set_drain``): the flag stays on its row, across restarts, until
resumed; the worker reads it back from each heartbeat (``beat`` returns it) and, while it is set,
claims nothing and reports ``draining``. Each heartbeat also carries its host's figures.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, delete, exists, insert, select, update

from telecoder.domain import HostStats, WorkerInfo, WorkerState
from telecoder.errors import Conflict, WorkerNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import workers

# Rows of workers gone for this long are deleted when a worker registers.
FORGET_AFTER_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Registration:
    """What registering found: whether this id's previous process ended without signing off."""

    restarted_after_crash: bool


def not_drained(worker_id: str) -> Any:
    """A SQL condition true unless an operator drained this worker (for the claim's WHERE
    clause: a drain holds from the moment it is recorded, not from the worker's next beat)."""
    return ~exists(
        select(workers.c.id)
        .where(and_(workers.c.id == worker_id, workers.c.drain.is_(True)))
        .correlate(None)
    )


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
        remote: bool = False,
    ) -> Registration:
        """``remote``: the worker runs on another host (it signs in over the API), so whether
        its previous process lives is told by its heartbeat alone, never by a pid here."""
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
            if remote:
                alive = (previous.host, previous.pid) != (host, pid)
            else:
                alive = _alive_elsewhere(previous, host, pid)
            if previous.state != WorkerState.OFFLINE and alive:
                raise Conflict(
                    f"worker id {worker_id!r} is in use by pid {previous.pid} on "
                    f"{previous.host}: give each worker its own TELECODER_WORKER_ID"
                )
            await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
            return Registration(restarted_after_crash=row.state != WorkerState.OFFLINE.value)

    async def beat(
        self,
        worker_id: str,
        *,
        state: WorkerState,
        running: int,
        stats: HostStats | None = None,
    ) -> bool:
        """Renew the heartbeat; whether an operator drained this worker. A drained worker's
        ``idle``/``working`` is stored as ``draining``."""
        values: dict[str, Any] = {"running": running, "last_heartbeat": time.time()}
        if stats is not None:
            values.update(stats.to_dict())
        async with self._db.write() as conn:
            drain = (
                await conn.execute(select(workers.c.drain).where(workers.c.id == worker_id))
            ).scalar()
            if drain and state in (WorkerState.IDLE, WorkerState.WORKING):
                state = WorkerState.DRAINING
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(state=state.value, **values)
            )
        return bool(drain)

    async def set_drain(self, worker_id: str, drain: bool) -> WorkerInfo:
        """Drain a worker (it finishes what runs, claims nothing new) or resume it; it obeys
        within a heartbeat. The row shows it at once. WorkerNotFound if no such worker."""
        now = time.time()
        async with self._db.write() as conn:
            row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).first()
            if row is None:
                raise WorkerNotFound(f"no worker {worker_id!r}")
            values: dict[str, Any] = {"drain": drain}
            if row.state in (WorkerState.IDLE.value, WorkerState.WORKING.value) and drain:
                values["state"] = WorkerState.DRAINING.value
            elif row.state == WorkerState.DRAINING.value and not drain:
                # Its next heartbeat says whether it is shutting down instead.
                values["state"] = (WorkerState.WORKING if row.running else WorkerState.IDLE).value
            await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
            row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).one()
        return _info(row, now, self.stale_after)

    async def get(self, worker_id: str) -> WorkerInfo:
        async with self._db.read() as conn:
            row = (await conn.execute(select(workers).where(workers.c.id == worker_id))).first()
        if row is None:
            raise WorkerNotFound(f"no worker {worker_id!r}")
        return _info(row, time.time(), self.stale_after)

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
        drain=bool(m["drain"]),
        stats=None
        if m["cpu_count"] is None and m["mem_total"] is None and m["load1"] is None
        else HostStats(
            cpu_count=m["cpu_count"],
            mem_total=m["mem_total"],
            mem_available=m["mem_available"],
            load1=m["load1"],
        ),
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
