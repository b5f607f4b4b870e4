"""Backing up and restoring a PostgreSQL store with ``pg_dump`` and ``pg_restore``.

A backup is ``pg_dump --format=custom`` written beside ``PATH`` and renamed into place; a restore
is ``pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error`` (all or
nothing). The connection travels in libpq's ``PG*`` variables, parsed from the database URL, so
the password is never on a command line (``ps``). Before either runs, the tool's major version
is checked against the server's: ``pg_dump`` refuses a newer server, and saying so first, with
the package to install, beats its own error after connecting.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import func, select, text

from telecoder.errors import BadInput, TeleCoderError, Unsupported
from telecoder.store.backup import Snapshot
from telecoder.store.db import Database
from telecoder.store.schema import events, sessions

# libpq's connection keywords and the variables that carry them.
_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslpassword": "PGSSLPASSWORD",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
}
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_REVISION = re.compile(r"^([0-9a-f]{4,32})\s*$", re.MULTILINE)


class PgToolError(TeleCoderError):
    """pg_dump or pg_restore failed; the message is what it said."""


def pg_env(dsn: str) -> dict[str, str]:
    """libpq's variables for ``dsn`` (over the process's own ``PG*``, which are dropped)."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception as e:
        raise BadInput(f"the database URL cannot be parsed: {type(e).__name__}") from None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in params.items():
        if value is None or value == "":
            continue
        if key not in _ENV:
            raise BadInput(f"the database URL's parameter {key!r} is not supported by backups")
        env[_ENV[key]] = str(value)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return env


async def _exec(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def server_major(db: Database) -> int:
    async with db.read() as conn:
        number = (await conn.execute(text("SHOW server_version_num"))).scalar()
    return int(str(number)) // 10000


async def tool(name: str, db: Database) -> str:
    """The path of ``name`` (pg_dump, pg_restore), checked to be as new as the server."""
    path = shutil.which(name)
    major = await server_major(db)
    package = f"postgresql-client-{major}"
    if path is None:
        raise Unsupported(
            f"{name} is not installed (or not on PATH): install PostgreSQL {major}'s client "
            f"tools (Debian/Ubuntu: apt install {package})"
        )
    code, out, _ = await _exec(path, "--version", env=dict(os.environ))
    found = _VERSION.search(out)
    if code != 0 or found is None:
        raise Unsupported(f"{path} --version did not say its version: {out.strip()[:200]!r}")
    if int(found.group(1)) < major:
        raise Unsupported(
            f"{name} is version {found.group(1)}, older than the server (PostgreSQL {major}): "
            f"install {package} (or newer) and put it first on PATH"
        )
    return path


def _said(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return "; ".join(lines[-5:])[:1000] or "no message"


async def counts(db: Database) -> tuple[int, int]:
    async with db.read() as conn:
        n_sessions = (await conn.execute(select(func.count()).select_from(sessions))).scalar()
        n_events = (await conn.execute(select(func.count()).select_from(events))).scalar()
    return int(n_sessions or 0), int(n_events or 0)


async def backup(db: Database, target: Path, *, revision: str | None) -> Snapshot:
    """``pg_dump`` the database into ``target`` (which must not exist yet)."""
    if target.exists():
        raise BadInput(f"{target} already exists: choose a new path")
    if not target.parent.is_dir():
        raise BadInput(f"{target.parent} is not a directory")
    pg_dump = await tool("pg_dump", db)
    partial = target.with_name(f".{target.name}.partial")
    env = pg_env(db.dsn)
    code, _, err = await _exec(
        pg_dump, "--format=custom", "--no-password", f"--file={partial}", env=env
    )
    if code != 0:
        partial.unlink(missing_ok=True)
        raise PgToolError(f"pg_dump failed (exit {code}): {_said(err)}")
    os.chmod(partial, 0o600)
    os.replace(partial, target)
    n_sessions, n_events = await counts(db)
    return Snapshot(
        path=target,
        revision=revision,
        sessions=n_sessions,
        events=n_events,
        size=target.stat().st_size,
    )


async def dump_revision(pg_restore: str, source: Path) -> str | None:
    """The schema revision a dump holds (its ``alembic_version`` row), None if it has none."""
    code, out, err = await _exec(
        pg_restore,
        "--data-only",
        "--table=alembic_version",
        "--file=-",
        str(source),
        env=dict(os.environ),
    )
    if code != 0:
        raise BadInput(f"{source} is not a pg_dump custom-format file: {_said(err)}")
    found = _REVISION.search(out.split("FROM stdin;", 1)[-1]) if "FROM stdin;" in out else None
    return found.group(1) if found else None


async def restore(db: Database, source: Path, *, head: str) -> Snapshot:
    """Replace the database's contents with the dump at ``source``, in one transaction."""
    if not source.is_file():
        raise BadInput(f"{source} does not exist")
    pg_restore = await tool("pg_restore", db)
    revision = await dump_revision(pg_restore, source)
    if revision is None:
        raise BadInput(f"{source} is not a TeleCoder backup (no schema revision in it)")
    if revision > head:
        raise BadInput(
            f"{source} is at schema revision {revision}, newer than this TeleCoder "
            f"({head}): upgrade TeleCoder first"
        )
    env = pg_env(db.dsn)
    code, _, err = await _exec(
        pg_restore,
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        f"--dbname={env.get('PGDATABASE', '')}",
        str(source),
        env=env,
    )
    if code != 0:
        raise PgToolError(f"pg_restore failed (exit {code}); nothing was changed: {_said(err)}")
    n_sessions, n_events = await counts(db)
    return Snapshot(
        path=source,
        revision=revision,
        sessions=n_sessions,
        events=n_events,
        size=source.stat().st_size,
    )
