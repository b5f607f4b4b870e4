"""What every command needs: settings, the store, and running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, OperationalError

from telecoder.errors import StoreUnavailable
from telecoder.masking import mask_logs
from telecoder.settings import Settings
from telecoder.store import Store, open_store, store_options

T = TypeVar("T")

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="TELECODER_SERVER",
        help="Talk to this TeleCoder server (http(s)://host:port) instead of the local database; "
        "its token comes from TELECODER_TOKEN.",
        show_default=False,
    ),
]


def load_settings() -> Settings:
    settings = Settings.load()
    mask_logs(settings)  # the CLI's entry: from here on, no log line shows a secret
    return settings


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
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
