"""Operator switches every process reads from the database: ``paused`` stops all claims.

``telecoder pause`` (or ``POST /api/pause``) writes one row; every worker on every host checks it
inside the claim statement itself (``not_paused()``), so no claim can slip past a pause that has
committed. Sessions already running finish; ``resume`` lets claims start again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, insert, select, update

from telecoder.store.db import Database
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.schema import control

PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class PauseState:
    """Whether claims are stopped, since when and by whom (None while running)."""

    paused: bool
    since: float | None = None
    by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"paused": self.paused, "since": self.since, "by": self.by}


def not_paused() -> Any:
    """A SQL condition true unless claims are paused (for the claim's WHERE clause)."""
    return ~exists(
        select(control.c.key)
        .where(and_(control.c.key == PAUSED, control.c.value == "1"))
        .correlate(None)
    )


class Control:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def pause(self, by: str | None = None) -> PauseState:
        """Stop all claims; pausing again keeps the first pause's time and author."""
        now = time.time()
        async with self._db.write() as conn:
            row = (await conn.execute(select(control).where(control.c.key == PAUSED))).first()
            if row is None:
                await conn.execute(
                    insert(control).values(key=PAUSED, value="1", updated_at=now, by=by)
                )
            elif row.value != "1":
                await conn.execute(
                    update(control)
                    .where(control.c.key == PAUSED)
                    .values(value="1", updated_at=now, by=by)
                )
            else:
                return PauseState(paused=True, since=row.updated_at, by=row.by)
        return PauseState(paused=True, since=now, by=by)

    async def resume(self) -> PauseState:
        async with self._db.write() as conn:
            await conn.execute(delete(control).where(control.c.key == PAUSED))
            # Wake every worker: the queue may hold work they skipped while paused.
            await self._db.notify(conn, Notice(NoticeKind.QUEUED, ""))
        return PauseState(paused=False)

    async def pause_state(self) -> PauseState:
        async with self._db.read() as conn:
            row = (await conn.execute(select(control).where(control.c.key == PAUSED))).first()
        if row is None or row.value != "1":
            return PauseState(paused=False)
        return PauseState(paused=True, since=row.updated_at, by=row.by)
