"""What every command needs: settings, the store, and running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from telecoder.errors import StoreUnavailable
from telecoder.settings import Settings
from telecoder.store import Store, open_store

T = TypeVar("T")


def load_settings() -> Settings:
    return Settings.load()


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
    try:
        store = await open_store(settings.store_url, lease_seconds=settings.lease_seconds)
    except (OperationalError, DBAPIError) as e:
        raise StoreUnavailable(f"cannot open the database: {e.orig}") from None
    try:
        yield store
    finally:
        await store.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
