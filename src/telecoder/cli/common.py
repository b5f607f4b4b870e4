"""What every command needs: settings, the store, and running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from telecoder.cli.options import ServerOption

if TYPE_CHECKING:
    from telecoder.settings import Settings
    from telecoder.store import Store

__all__ = ["ServerOption", "load_settings", "opened", "run_async"]

T = TypeVar("T")


def load_settings(*, log_file: bool = False) -> Settings:
    """``log_file``: a long-running command (worker) logs to ``TELECODER_LOG_FILE`` too."""
    from telecoder.masking import mask_logs
    from telecoder.settings import Settings

    settings = Settings.load()
    mask_logs(settings, log_file=log_file)  # from here on, no log line shows a secret
    return settings


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
    from sqlalchemy.exc import DBAPIError, OperationalError

    from telecoder.errors import StoreUnavailable
    from telecoder.store import open_store, store_options

    try:
        store = await open_store(settings.store_url, **store_options(settings))
    except (OperationalError, DBAPIError) as e:
        raise StoreUnavailable(f"cannot open the database: {e.orig}") from None
    try:
        yield store
    finally:
        await store.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
