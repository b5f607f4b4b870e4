"""The schema the migrations build is the schema the code declares; upgrading is safe to repeat."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect

from telecoder.store import migrations, open_store
from telecoder.store.db import Database
from telecoder.store.schema import FULL_TEXT_OBJECTS, metadata
from tests.conftest import PG_ADMIN_URL


def _diff(conn: Connection) -> list[Any]:
    def declared(name: str | None, type_: str, parent: object) -> bool:
        return not (name or "").startswith(FULL_TEXT_OBJECTS)  # raw DDL: FTS5, a GIN index

    opts = {"compare_type": True, "include_name": declared}
    context = MigrationContext.configure(conn, opts=opts)
    return list(compare_metadata(context, metadata))


async def test_migrations_build_the_declared_schema(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrations.upgrade(db)
        async with db.read() as conn:
            diffs = await conn.run_sync(_diff)
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await db.dispose()
    assert diffs == []
    assert {"sessions", "attempts", "events", "alembic_version"} <= tables


def test_head_constant_is_the_scripts_head() -> None:
    assert migrations.script_head() == migrations.HEAD


async def test_upgrade_is_idempotent(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrations.upgrade(db)
        assert await migrations.current_revision(db) == migrations.HEAD
        await migrations.upgrade(db)
        # Through Alembic itself too, not only the fast path that sees HEAD already there.
        await migrations.upgrade(db, migrations.HEAD)
        assert await migrations.current_revision(db) == migrations.HEAD
        async with db.read() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.dispose()


async def test_current_revision_of_an_empty_sqlite_file(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert await migrations.current_revision(db) is None
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_current_revision_of_an_empty_postgresql_database() -> None:
    with _fresh_pg() as url:
        db = Database(url)
        try:
            assert await migrations.current_revision(db) is None
        finally:
            await db.dispose()


_UPGRADE = """
import asyncio, sys
from telecoder.store import open_store

async def main():
    store = await open_store(sys.argv[1])
    await store.close()

asyncio.run(main())
"""


def _upgrade_concurrently(url: str, processes: int = 4) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _UPGRADE, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()


async def _assert_at_head(url: str) -> None:
    store = await open_store(url, migrate=False)
    try:
        assert await migrations.current_revision(store.db) == migrations.HEAD
        async with store.db.read() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await store.close()


async def test_concurrent_upgrades_of_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'telecoder.db'}"
    _upgrade_concurrently(url)
    await _assert_at_head(url)


@pytest.mark.postgres
async def test_concurrent_upgrades_of_a_fresh_postgresql_database() -> None:
    with _fresh_pg() as url:
        _upgrade_concurrently(url)
        await _assert_at_head(url)


@contextmanager
def _fresh_pg() -> Iterator[str]:
    name = f"telecoder_m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _open_aiosqlite_connections() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, aiosqlite.Connection) and o._connection)


async def test_a_store_that_fails_to_open_leaves_no_connection_open(tmp_path: Path) -> None:
    """A database the migrations cannot bring up to date (here: stamped by an unknown, newer
    release) fails ``open_store``, and the connection it was read with is closed there, not
    left to the garbage collector (which warns in whichever later test it happens to run)."""
    path = tmp_path / "newer.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999')")
    before = _open_aiosqlite_connections()
    with pytest.raises(CommandError, match="9999"):
        await open_store(f"sqlite:///{path}")
    assert _open_aiosqlite_connections() == before
