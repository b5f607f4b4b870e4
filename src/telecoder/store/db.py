"""The database handle: one async engine, short read and write transactions.

SQLite runs in WAL mode; a write transaction starts with ``BEGIN IMMEDIATE`` so it takes the
write lock up front instead of failing half-way, and waits up to ``busy_timeout`` for it.
PostgreSQL uses its defaults (READ COMMITTED); claims lock rows with ``FOR UPDATE SKIP LOCKED``.
Each process keeps at most ``pool_size + max_overflow`` connections (a worker's and the bus's
``Listener`` adds one of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from telecoder import private
from telecoder.errors import BadInput, StoreUnavailable
from telecoder.store.notify import Notice, NoticeKind

log = logging.getLogger(__name__)

_IMMEDIATE = "telecoder_immediate"
_NOTICES = "telecoder_notices"
_DATABASE = "telecoder_database"
POOL_SIZE = 8  # connections a process keeps open
MAX_OVERFLOW = 16  # more it may open under load
_IDLE_MS = 30_000  # PostgreSQL: end a session idle in a transaction for this long
_BUSY_MS = 30_000  # SQLite: wait this long for a lock


def async_url(url: str) -> str:
    """Map a plain URL to its async driver: sqlite -> aiosqlite, postgresql -> psycopg."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        raise BadInput(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


class Database:
    """``pool_size``/``max_overflow`` bound a PostgreSQL process's connections; with
    ``event_notices`` off, event appends send no NOTIFY (live readers elsewhere then poll)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        max_overflow: int = MAX_OVERFLOW,
        event_notices: bool = True,
    ) -> None:
        self.url = async_url(url)
        self.event_notices = event_notices
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                # SQLite gives the -wal and -shm files the database file's mode: 0600.
                private.create_file(private.make_dir(Path(path).parent) / Path(path).name)
            self.engine: AsyncEngine = create_async_engine(
                self.url, connect_args={"timeout": _BUSY_MS / 1000}, pool_size=8, max_overflow=16
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                # Our transactions last milliseconds. A client that sits in one (a paused or
                # cut-off worker) is ended, so its row locks cannot block recovery for ever.
                connect_args={"options": f"-c idle_in_transaction_session_timeout={_IDLE_MS}"},
            )
        self._subscribers: list[Callable[[Notice], None]] = []
        # SQLite has one writer at a time. Writers of this process queue here rather than in
        # SQLite's busy handler, which sleeps for milliseconds between its tries.
        self._write_turn = asyncio.Lock() if self.is_sqlite else None

    @property
    def dsn(self) -> str:
        """The URL for a plain libpq (psycopg) connection."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite it holds the write lock from its first statement.

        A lost or unreachable database raises ``StoreUnavailable``.
        """
        notices: dict[Notice, None] = {}  # an ordered set
        try:
            async with self._turn(), self.engine.connect() as conn:
                if self.is_sqlite:
                    await conn.execution_options(**{_IMMEDIATE: True})
                conn.info[_NOTICES] = notices
                conn.info[_DATABASE] = self
                try:
                    async with conn.begin():
                        yield conn
                finally:
                    conn.info.pop(_NOTICES, None)
                    conn.info.pop(_DATABASE, None)
        except (OperationalError, InterfaceError) as e:
            raise StoreUnavailable(f"the database failed: {e.orig}") from e
        for notice in notices:
            self._deliver(notice)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._write_turn is None:
            yield
        else:
            async with self._write_turn:
                yield

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
        except (OperationalError, InterfaceError) as e:
            raise StoreUnavailable(f"the database failed: {e.orig}") from e

    async def notify(self, conn: AsyncConnection, notice: Notice) -> None:
        """Tell listeners about ``notice`` once the transaction of ``conn`` commits; a notice
        already sent in this transaction is not sent again (PostgreSQL would drop the repeat
        too, but only after the round trip)."""
        notices: dict[Notice, None] = conn.info[_NOTICES]
        if notice in notices:
            return
        notices[notice] = None
        if not self.is_sqlite and (notice.kind != NoticeKind.EVENTS or self.event_notices):
            await conn.execute(select(func.pg_notify(notice.channel, notice.encode())))

    def subscribe(self, callback: Callable[[Notice], None]) -> Callable[[], None]:
        """Hear of notices committed by this process; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _deliver(self, notice: Notice) -> None:
        for callback in list(self._subscribers):
            try:
                callback(notice)
            except Exception:
                log.exception("a notice subscriber failed")

    async def dispose(self) -> None:
        await self.engine.dispose()


async def notify_events(conn: AsyncConnection, session_id: str) -> None:
    """``session_id`` has new events: a notice at commit, for the live bus (in a write
    transaction of ``Database.write``; elsewhere nothing is sent and readers find the events at
    their next poll)."""
    db: Database | None = conn.info.get(_DATABASE)
    if db is not None:
        await db.notify(conn, Notice(NoticeKind.EVENTS, session_id))


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, start transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        _wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _wal(cursor: Any) -> None:
    """Put the database in WAL mode. Switching takes an exclusive lock without waiting for it
    (SQLite's busy handler is not asked), so a process that opens a new database while another
    creates it would fail at once with "database is locked": it tries again instead."""
    deadline = time.monotonic() + _BUSY_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
