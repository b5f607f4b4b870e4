"""The endpoints table: model endpoints and what the gateways learnt of them.

A row is either an endpoint registered by ``telecoder endpoints add`` or the shared state of an
endpoint from the operator's environment (``anthropic``, ``openai``, …), written by a gateway so
other processes and hosts see it: health, latency, models, failures of real traffic, and the
shared backoff (``backoff_until``). Keys are never stored: ``key_env`` names the variable of the
gateway's environment that holds one.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.errors import Conflict
from telecoder.store.db import Database, dumps, loads
from telecoder.store.health import record_in
from telecoder.store.schema import endpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointRow:
    name: str
    url: str
    kind: str  # anthropic, openai, gemini, ollama
    key_env: str | None = None
    models: tuple[str, ...] = ()
    healthy: bool | None = None  # None: not checked yet
    latency_ms: float | None = None
    error: str | None = None
    checked_at: float | None = None
    failures: int = 0  # requests of real traffic that failed in a row
    backoff_until: float | None = None
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "kind": self.kind,
            "key_env": self.key_env,
            "models": list(self.models),
            "healthy": self.healthy,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "checked_at": self.checked_at,
            "failures": self.failures,
            "backoff_until": self.backoff_until,
            "created_at": self.created_at,
        }


class Endpoints:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, row: EndpointRow) -> EndpointRow:
        """Store a new endpoint; Conflict when the name is taken."""
        values = row.to_dict()
        values["models"] = dumps(list(row.models))
        try:
            async with self._db.write() as conn:
                taken = await conn.execute(
                    select(endpoints.c.name).where(endpoints.c.name == row.name)
                )
                if taken.first() is not None:
                    raise Conflict(f"an endpoint named {row.name!r} exists already")
                await conn.execute(insert(endpoints).values(**values))
        except IntegrityError:  # added by another process meanwhile
            raise Conflict(f"an endpoint named {row.name!r} exists already") from None
        return row

    async def ensure(self, name: str, *, url: str, kind: str, key_env: str | None) -> None:
        """Keep a row for an endpoint of the environment, with its current URL and kind."""
        try:
            async with self._db.write() as conn:
                done = await conn.execute(
                    update(endpoints)
                    .where(endpoints.c.name == name)
                    .values(url=url, kind=kind, key_env=key_env)
                )
                if not done.rowcount:
                    await conn.execute(
                        insert(endpoints).values(
                            name=name, url=url, kind=kind, key_env=key_env, created_at=time.time()
                        )
                    )
        except IntegrityError:  # another gateway made it meanwhile: it is there
            pass

    async def get(self, name: str) -> EndpointRow | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(endpoints).where(endpoints.c.name == name))).first()
        return None if row is None else _endpoint(row)

    async def list(self) -> list[EndpointRow]:
        async with self._db.read() as conn:
            rows = await conn.execute(select(endpoints).order_by(endpoints.c.name))
            return [_endpoint(r) for r in rows]

    async def remove(self, name: str) -> bool:
        async with self._db.write() as conn:
            done = await conn.execute(delete(endpoints).where(endpoints.c.name == name))
        return bool(done.rowcount)

    async def record_check(
        self,
        name: str,
        *,
        healthy: bool,
        latency_ms: float | None,
        error: str | None,
        models: builtins.list[str] | None,
        at: float | None = None,
    ) -> None:
        """A health check's result; ``models`` None keeps the models found before."""
        values: dict[str, Any] = {
            "healthy": healthy,
            "latency_ms": latency_ms,
            "error": error,
            "checked_at": at if at is not None else time.time(),
        }
        if healthy:
            values["failures"] = 0
        if models is not None:
            values["models"] = dumps(models)
        async with self._db.write() as conn:
            await _note_health(conn, name, healthy, error, "check")
            await conn.execute(update(endpoints).where(endpoints.c.name == name).values(**values))

    async def record_traffic(
        self, name: str, *, failures: int, healthy: bool | None, error: str | None
    ) -> None:
        """What real traffic showed: failures in a row, and health when it changed."""
        values: dict[str, Any] = {"failures": failures}
        if healthy is not None:
            values.update(healthy=healthy, error=error)
        async with self._db.write() as conn:
            if healthy is not None:
                await _note_health(conn, name, healthy, error, "traffic", failures=failures)
            await conn.execute(update(endpoints).where(endpoints.c.name == name).values(**values))

    async def set_backoff(self, name: str, until: float) -> None:
        """No request to ``name`` before ``until``, for every gateway (a later time stays)."""
        async with self._db.write() as conn:
            await conn.execute(
                update(endpoints)
                .where(
                    endpoints.c.name == name,
                    or_(endpoints.c.backoff_until.is_(None), endpoints.c.backoff_until < until),
                )
                .values(backoff_until=until)
            )

    async def backoffs(self, *, now: float | None = None) -> dict[str, float]:
        """The endpoints some gateway is backing off from, with when each opens."""
        now = time.time() if now is None else now
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(endpoints.c.name, endpoints.c.backoff_until).where(
                    endpoints.c.backoff_until > now
                )
            )
            return {name: float(until) for name, until in rows}


def _endpoint(row: Row[Any]) -> EndpointRow:
    m = dict(row._mapping)
    return EndpointRow(
        name=m["name"],
        url=m["url"],
        kind=m["kind"],
        key_env=m["key_env"],
        models=tuple(loads(m["models"]) or ()),
        healthy=m["healthy"],
        latency_ms=m["latency_ms"],
        error=m["error"],
        checked_at=m["checked_at"],
        failures=m["failures"],
        backoff_until=m["backoff_until"],
        created_at=m["created_at"],
    )


async def _note_health(
    conn: AsyncConnection, name: str, healthy: bool, error: str | None, by: str, **detail: Any
) -> None:
    """A change of an endpoint's health goes to the supervisor's history."""
    # Locked (PostgreSQL; SQLite's write transactions are serial): two checks at once record
    # one change, not two.
    query = select(endpoints.c.healthy).where(endpoints.c.name == name).with_for_update()
    before = (await conn.execute(query)).first()
    if before is None or before.healthy == healthy or (before.healthy is None and healthy):
        return  # no such row, no change, or first found healthy: nothing to tell
    kind = "endpoint_healthy" if healthy else "endpoint_unhealthy"
    await record_in(conn, kind, name, time.time(), by=by, error=error, **detail)
