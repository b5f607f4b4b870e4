"""Backing up and restoring a SQLite store with SQLite's online backup API.

The backup reads a consistent snapshot of the database in one step (in WAL mode readers never
block writers), writes it to a temporary file beside ``PATH``, checks it and renames it into
place, so workers can keep running and ``PATH`` is never half-written. A restore checks the
file first — a TeleCoder database, intact, not from a newer version — then copies it into the
live database through the same API, so the write goes through SQLite's locks, and brings its
schema up to date.

PostgreSQL has its own tools (``pg_dump`` / ``pg_restore``); see the README.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from telecoder import private
from telecoder.errors import BadInput
from telecoder.store.db import Database


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a backup file holds."""

    path: Path
    revision: str | None
    sessions: int
    events: int
    size: int


def sqlite_file(db: Database) -> Path:
    """The file of a SQLite store."""
    if not db.is_sqlite:
        raise BadInput("not a SQLite database")
    path = make_url(db.url).database
    if not path or path == ":memory:":
        raise BadInput("an in-memory database has no file to back up")
    return Path(path)


async def backup(db: Database, target: Path) -> Snapshot:
    """Copy the live database to ``target`` (which must not exist yet)."""
    source = sqlite_file(db)
    if target.exists():
        raise BadInput(f"{target} already exists: choose a new path")
    if not target.parent.is_dir():
        raise BadInput(f"{target.parent} is not a directory")
    return await asyncio.to_thread(_backup, source, target)


async def restore(db: Database, source: Path, *, head: str) -> Snapshot:
    """Replace the live database's contents with the backup at ``source``."""
    target = sqlite_file(db)
    snapshot = await asyncio.to_thread(inspect, source)
    if snapshot.revision is not None and snapshot.revision > head:
        raise BadInput(
            f"{source} is at schema revision {snapshot.revision}, newer than this TeleCoder "
            f"({head}): upgrade TeleCoder first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_copy, source, target)
    return snapshot


def inspect(path: Path) -> Snapshot:
    """Check that ``path`` is an intact TeleCoder database and say what it holds."""
    if not path.is_file():
        raise BadInput(f"{path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA integrity_check").fetchone()
            if ok is None or ok[0] != "ok":
                raise BadInput(f"{path} is damaged: {ok[0] if ok else 'no answer'}")
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            sessions = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise BadInput(f"{path} is not a TeleCoder database: {e}") from None
    revision = str(row[0]) if row else None
    return Snapshot(path, revision, int(sessions), int(events), path.stat().st_size)


def _backup(source: Path, target: Path) -> Snapshot:
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    private.create_file(partial)  # a copy of the database: as private as the database
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            # A single file, readable without its -wal: switch the copy out of WAL mode.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    try:
        inspect(partial)
    except BadInput:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return inspect(target)


def _copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
