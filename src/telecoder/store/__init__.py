"""The store: sessions, the queue and the event log on SQLite or PostgreSQL."""

from __future__ import annotations

from telecoder.store.db import Database
from telecoder.store.events import Events
from telecoder.store.migrations import upgrade
from telecoder.store.queue import Claimed, Heartbeat, Outcome, Queue
from telecoder.store.sessions import Page, Sessions

__all__ = ["Claimed", "Heartbeat", "Outcome", "Page", "Store", "open_store"]


class Store:
    def __init__(self, db: Database, *, lease_seconds: float) -> None:
        self.db = db
        self.sessions = Sessions(db)
        self.queue = Queue(db, lease_seconds=lease_seconds)
        self.events = Events(db)

    async def close(self) -> None:
        await self.db.dispose()


async def open_store(url: str, *, lease_seconds: float = 30.0, migrate: bool = True) -> Store:
    """Open the database at ``url``, bringing its schema up to date unless told not to."""
    db = Database(url)
    if migrate:
        await upgrade(db)
    return Store(db, lease_seconds=lease_seconds)
