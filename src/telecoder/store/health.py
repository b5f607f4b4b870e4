"""The supervisor's history: each healing action it took, listed at ``GET /api/health/history``.

Kinds: ``requeued`` (a dead worker's or an expired lease's session, to be retried),
``recovered`` (such a session that was not retried: dead, or cancelled), ``pruned_worktree`` (a
finished session's kept worktree, past ``TELECODER_WORKTREE_RETENTION_SECONDS``),
``endpoint_unhealthy`` / ``endpoint_healthy`` (a model endpoint's health changed).
Rows older than ``KEEP_SECONDS`` are deleted as new ones arrive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import health_events

KEEP_SECONDS = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class HealthEvent:
    id: int
    kind: str
    subject: str
    detail: dict[str, Any]
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "detail": self.detail,
            "created_at": self.created_at,
        }


async def record_in(
    conn: AsyncConnection, kind: str, subject: str, now: float, **detail: Any
) -> None:
    """Record an action in the caller's transaction (it happened if and only if this did)."""
    await conn.execute(
        insert(health_events).values(
            kind=kind, subject=subject, detail=dumps(detail), created_at=now
        )
    )


class HealthLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, kind: str, subject: str, **detail: Any) -> None:
        now = time.time()
        async with self._db.write() as conn:
            await conn.execute(
                delete(health_events).where(health_events.c.created_at < now - KEEP_SECONDS)
            )
            await record_in(conn, kind, subject, now, **detail)

    async def history(self, *, limit: int = 100, kind: str | None = None) -> list[HealthEvent]:
        """The newest ``limit`` actions, newest first."""
        query = select(health_events).order_by(health_events.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(health_events.c.kind == kind)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            HealthEvent(
                id=r.id,
                kind=r.kind,
                subject=r.subject,
                detail=loads(r.detail) or {},
                created_at=r.created_at,
            )
            for r in rows
        ]
