"""What follows a session's new status, in the transaction that changes it: the notifications
out (``outbox.record_status``), for a session of a run that ended, its dependants and the
run's status (``runs.settle``), and for a session that ended, its chain's follow-ups
(``chains.spawn``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Session
from telecoder.store.chains import spawn
from telecoder.store.db import Database
from telecoder.store.outbox import record_status
from telecoder.store.runs import settle


async def status_changed(conn: AsyncConnection, db: Database, session: Session, now: float) -> None:
    await record_status(conn, session, now)
    if session.run_id is not None and session.status.terminal:
        await settle(conn, db, session, now)
    if session.status.terminal:
        await spawn(conn, db, session, now)
