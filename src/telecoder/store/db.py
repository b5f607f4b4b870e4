"""The database handle: one async engine, short read and write transactions.

SQLite runs in WAL mode; a write transaction starts with ``BEGIN IMMEDIATE`` so it takes the
write lock up front instead of failing half-way, and waits up to ``busy_timeout`` for it.
PostgreSQL uses its defaults (READ COMMITTED); claims lock rows with ``FOR UPDATE SKIP LOCKED``.
Each process keeps at most ``pool_size + max_overflow`` connections (a worker's and the bus's
``Listener`` adds one of its own).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import TextClause, event, func, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from telecoder import private
from telecoder.errors import BadInput, StoreUnavailable
from telecoder.store.notify import Notice, NoticeKind

log = logging.getLogger(__name__)

_IMMEDIATE = "telecoder_immediate"
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


class _Writing:
    """What a write transaction of ``Database.write`` collects: the notices to send at commit."""

    __slots__ = ("db", "notices")

    def __init__(self, db: Database) -> None:
        self.db = db
        self.notices: dict[Notice, None] = {}  # an ordered set


# The write transaction each connection (by ``id``, for as long as it is in one) is in. Kept
# beside the connection, not in its ``info``: that is the pooled record's, and reading it after
# the driver dropped the connection (a task cancelled mid-statement) makes SQLAlchemy reconnect
# outside the async context (MissingGreenlet).
_WRITING: dict[int, _Writing] = {}


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
        # One statement needs no transaction around it: on PostgreSQL, autocommit saves the
        # BEGIN and COMMIT round trips (a third of the bus's, which reads every few ms).
        self._single: AsyncEngine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
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
        writing = _Writing(self)
        try:
            async with self._turn(), self.engine.connect() as conn:
                if self.is_sqlite:
                    await conn.execution_options(**{_IMMEDIATE: True})
                _WRITING[id(conn)] = writing
                try:
                    async with conn.begin():
                        yield conn
                finally:
                    del _WRITING[id(conn)]
        except (OperationalError, InterfaceError) as e:
            raise StoreUnavailable(f"the database failed: {e.orig}") from e
        for notice in writing.notices:
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

    @asynccontextmanager
    async def read_one(self) -> AsyncIterator[AsyncConnection]:
        """``read`` for one statement: it sees one snapshot by itself, so on PostgreSQL it runs
        without BEGIN and COMMIT (one round trip, not three). Never for two statements that
        must agree."""
        try:
            async with self._single.connect() as conn, conn.begin():
                yield conn
        except (OperationalError, InterfaceError) as e:
            raise StoreUnavailable(f"the database failed: {e.orig}") from e

    async def notify(self, conn: AsyncConnection, notice: Notice) -> None:
        """Tell listeners about ``notice`` once the transaction of ``conn`` commits; a notice
        already sent in this transaction is not sent again (PostgreSQL would drop the repeat
        too, but only after the round trip)."""
        await self.notify_all(conn, [notice])

    async def notify_all(self, conn: AsyncConnection, batch: Sequence[Notice]) -> None:
        """``notify`` for each of ``batch``, in order; on PostgreSQL in one statement (a group
        commit tells of a hundred sessions: one round trip, not a hundred)."""
        notices = _WRITING[id(conn)].notices
        fresh = [n for n in dict.fromkeys(batch) if n not in notices]
        notices.update(dict.fromkeys(fresh))
        if self.is_sqlite:
            return
        sent = [n for n in fresh if n.kind != NoticeKind.EVENTS or self.event_notices]
        if len(sent) == 1:
            notice = sent[0]
            await conn.execute(select(func.pg_notify(notice.channel, notice.encode())))
        elif sent:
            size = padded(len(sent))
            params: dict[str, str | None] = {}
            for i in range(size):
                item = sent[i] if i < len(sent) else None  # a NULL row sends nothing
                params[f"c{i}"] = item.channel if item else None
                params[f"p{i}"] = item.encode() if item else None
            await conn.execute(_notify_statement(size), params)

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


def padded(n: int) -> int:
    """Rows a statement of ``n`` rows takes (the next power of two; the rest are NULL rows that
    match nothing): a handful of statement texts, each compiled once, serve every group size
    (a text per size kept a hundred compiled statements of up to 400 parameters in memory)."""
    return 1 << max(n - 1, 0).bit_length()


@functools.lru_cache(maxsize=16)
def _notify_statement(n: int) -> TextClause:
    """``n`` notices (or fewer, NULL rows after) in one statement (PostgreSQL; a ``VALUES``
    list is scanned in order)."""
    rows = ", ".join(f"(:c{i}, :p{i})" for i in range(n))
    return text(
        f"SELECT pg_notify(v.column1, v.column2) FROM (VALUES {rows}) AS v "
        "WHERE v.column1 IS NOT NULL"
    )


async def notify_events(
    conn: AsyncConnection, *session_ids: str, bodies: Mapping[str, str] | None = None
) -> None:
    """Each of ``session_ids`` has new events: a notice at commit, for the live bus (in a write
    transaction of ``Database.write``; elsewhere nothing is sent and readers find the events at
    their next poll). ``bodies``: the events themselves, by session, where they fit a notice."""
    writing = _WRITING.get(id(conn))
    if writing is not None:
        got = bodies or {}
        batch = [Notice(NoticeKind.EVENTS, s, got.get(s, "")) for s in session_ids]
        await writing.db.notify_all(conn, batch)


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
