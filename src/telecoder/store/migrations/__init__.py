"""Alembic migrations, applied on start and by ``telecoder db upgrade``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from telecoder.store.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only when a migration must run: most starts find the schema current.

# The newest revision; a test keeps it equal to the scripts' head, so a start-up that finds the
# database already there skips loading Alembic's script directory.
HEAD = "0019"

_HERE = Path(__file__).parent


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    return config


def script_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except DBAPIError:
            return None
    return None if row is None else str(row[0])


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; concurrent callers wait for each other."""
    if revision == "head" and await current_revision(db) == HEAD:
        return
    async with db.write() as conn:
        if not db.is_sqlite:
            # One migrator at a time across hosts; released when the transaction ends.
            await conn.execute(text("SELECT pg_advisory_xact_lock(7080001)"))
        await conn.run_sync(_upgrade, revision)


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, revision)
