"""The audit log: one row per mutating action (an API call, a dashboard form, a management
command), append-only — this module has no update or delete.

A row says who (``actor`` and the ``role`` they acted with), what (``action``: ``POST
/api/sessions/{session_id}/cancel`` or ``users add``), to what (``target``), when (``ts``) and
from where (``source``: the client's address, or ``cli``; and its user agent).
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, select

from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import audit

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRow:
    id: int
    ts: float
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    source: str
    user_agent: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "source": self.source,
            "user_agent": self.user_agent,
        }


def _row(row: Row[Any]) -> AuditRow:
    m = row._mapping
    return AuditRow(
        id=m["id"],
        ts=m["ts"],
        actor=m["actor"],
        role=m["role"],
        action=m["action"],
        target=m["target"],
        detail=loads(m["detail"]) or {},
        source=m["source"],
        user_agent=m["user_agent"],
    )


class Audit:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        source: str,
        detail: dict[str, Any] | None = None,
        user_agent: str | None = None,
    ) -> None:
        values = {
            "ts": time.time(),
            "actor": actor[:255],
            "role": role[:16],
            "action": action[:255],
            "target": target,
            "detail": dumps(detail or {}),
            "source": source[:255],
            "user_agent": user_agent,
        }
        async with self._db.write() as conn:
            await conn.execute(insert(audit).values(**values))

    async def list(
        self, *, actor: str | None = None, since: float | None = None, limit: int = 100
    ) -> builtins.list[AuditRow]:
        """Newest first."""
        query = select(audit)
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        if since is not None:
            query = query.where(audit.c.ts >= since)
        query = query.order_by(audit.c.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
        async with self._db.read() as conn:
            return [_row(r) for r in (await conn.execute(query)).all()]
