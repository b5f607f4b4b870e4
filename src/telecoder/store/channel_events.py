"""What channels leave behind besides sessions: deliveries that made none, users' choices.

A delivery that made no session (ignored, answered, asked which repository) is recorded under
(channel, key) before its reply is sent, so a redelivery does not answer twice. A user's
preferences (Telegram's ``/model``) are kept per channel and user.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from telecoder.store.db import Database
from telecoder.store.schema import channel_events, channel_prefs


class ChannelEvents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def once(
        self, channel: str, key: str, action: str, session_id: str | None = None
    ) -> bool:
        """Record that (channel, key) was handled with ``action``; False if it was before."""
        dialect = sqlite if self._db.is_sqlite else postgresql
        claim = (
            dialect.insert(channel_events)
            .values(
                channel=channel,
                key=key,
                action=action,
                session_id=session_id,
                created_at=time.time(),
            )
            .on_conflict_do_nothing()
            .returning(channel_events.c.key)
        )
        async with self._db.write() as conn:
            return (await conn.execute(claim)).first() is not None

    async def seen(self, channel: str, key: str) -> str | None:
        """The action (channel, key) was handled with, if it was."""
        query = select(channel_events.c.action).where(
            channel_events.c.channel == channel, channel_events.c.key == key
        )
        async with self._db.read() as conn:
            return (await conn.execute(query)).scalar()

    async def prune(self, older_than: float) -> int:
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(channel_events).where(channel_events.c.created_at < older_than)
            )
        return done.rowcount

    # --- users' preferences ------------------------------------------------------------------

    async def preference(self, channel: str, user: str, name: str) -> str | None:
        query = select(channel_prefs.c.value).where(
            channel_prefs.c.channel == channel,
            channel_prefs.c.user == user,
            channel_prefs.c.name == name,
        )
        async with self._db.read() as conn:
            return (await conn.execute(query)).scalar()

    async def prefer(self, channel: str, user: str, name: str, value: str | None) -> None:
        """Set the user's preference; None clears it."""
        where = (
            channel_prefs.c.channel == channel,
            channel_prefs.c.user == user,
            channel_prefs.c.name == name,
        )
        async with self._db.write() as conn:
            await conn.execute(delete(channel_prefs).where(*where))
            if value is not None:
                await conn.execute(
                    channel_prefs.insert().values(
                        channel=channel, user=user, name=name, value=value, updated_at=time.time()
                    )
                )
