"""Exactly-once intake: a session queued under a (source, key) is queued once.

The key row and the session are inserted in one transaction. Two requests with the same key at
once cannot both win: on PostgreSQL the second ``INSERT … ON CONFLICT DO NOTHING`` waits for the
first transaction and then inserts nothing; on SQLite the write lock (``BEGIN IMMEDIATE``) makes
the second see the first's row. The loser answers with the winner's session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import NewSession, Session
from telecoder.errors import Conflict
from telecoder.store.db import Database
from telecoder.store.events import append_events
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.rows import new_session_values, queued_event
from telecoder.store.schema import deliveries, sessions
from telecoder.store.sessions import _get

MAX_KEY = 255


@dataclass(frozen=True, slots=True)
class Once:
    session: Session
    created: bool  # False: the key was seen before; ``session`` is the one it made then


class Deliveries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(
        self, source: str, key: str, *, fingerprint: str | None = None
    ) -> Session | None:
        """The session queued under (source, key), if any."""
        async with self._db.read() as conn:
            return await _existing(conn, source, key, fingerprint)

    async def create_once(
        self, new: NewSession, *, source: str, key: str, fingerprint: str | None = None
    ) -> Once:
        """Queue ``new`` unless (source, key) already queued a session; then that one.

        ``fingerprint``: of the request; the same key with another fingerprint is a Conflict.
        """
        now = time.time()
        dialect = sqlite if self._db.is_sqlite else postgresql
        claim = (
            dialect.insert(deliveries)
            .values(
                source=source, key=key, session_id=new.id, fingerprint=fingerprint, created_at=now
            )
            .on_conflict_do_nothing()
            .returning(deliveries.c.session_id)
        )
        async with self._db.write() as conn:
            if (await conn.execute(claim)).first() is None:
                found = await _existing(conn, source, key, fingerprint)
                assert found is not None  # the row that conflicted is committed
                return Once(found, created=False)
            await conn.execute(insert(sessions).values(new_session_values(new, now)))
            await append_events(conn, new.id, None, [queued_event(new)], now=now)
            await self._db.notify(conn, Notice(NoticeKind.QUEUED, new.id))
            return Once(await _get(conn, new.id), created=True)


async def _existing(
    conn: AsyncConnection, source: str, key: str, fingerprint: str | None
) -> Session | None:
    row = (
        await conn.execute(
            select(deliveries.c.session_id, deliveries.c.fingerprint).where(
                deliveries.c.source == source, deliveries.c.key == key
            )
        )
    ).first()
    if row is None:
        return None
    if fingerprint is not None and row.fingerprint not in (None, fingerprint):
        raise Conflict(
            f"the idempotency key {key!r} was used for a different request: use a new key"
        )
    return await _get(conn, row.session_id)
