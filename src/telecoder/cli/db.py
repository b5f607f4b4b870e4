"""``telecoder db``: the database's schema, backups and restores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import Exit, err, out
from telecoder.errors import Conflict
from telecoder.store import backup as backups
from telecoder.store.db import Database
from telecoder.store.migrations import HEAD, current_revision
from telecoder.store.migrations import upgrade as migrate

app = typer.Typer(help="Manage the database.", no_args_is_help=True)

PG_GUIDANCE = """\
This database is PostgreSQL: back it up and restore it with PostgreSQL's own tools, e.g.

  pg_dump --format=custom --file=telecoder.dump "$TELECODER_DATABASE_URL"
  pg_restore --clean --if-exists --no-owner --dbname="$TELECODER_DATABASE_URL" telecoder.dump

(stop the workers before a restore; see the README's "Backups" section)."""


@app.command()
def upgrade() -> None:
    """Apply every pending migration (also done automatically on start)."""
    settings = load_settings()

    async def go() -> str | None:
        db = Database(settings.store_url)
        try:
            await migrate(db)
            return await current_revision(db)
        finally:
            await db.dispose()

    revision = run_async(go())
    out.print(f"database at revision {revision}")


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist).")],
) -> None:
    """Copy the SQLite database to PATH, consistently, even while workers run."""
    settings = load_settings()
    if not Database(settings.store_url).is_sqlite:
        err.print(PG_GUIDANCE)
        raise typer.Exit(Exit.UNSUPPORTED)

    async def go() -> backups.Snapshot:
        async with opened(settings) as store:
            return await backups.backup(store.db, path.expanduser().absolute())

    snapshot = run_async(go())
    out.print(
        f"backed up {snapshot.sessions} sessions ({snapshot.events} events, "
        f"revision {snapshot.revision}, {snapshot.size} bytes) to {snapshot.path}"
    )


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="A file made by `telecoder db backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Restore even though workers are running.")
    ] = False,
) -> None:
    """Replace the SQLite database with the backup at PATH (refused while workers run)."""
    settings = load_settings()
    if not Database(settings.store_url).is_sqlite:
        err.print(PG_GUIDANCE)
        raise typer.Exit(Exit.UNSUPPORTED)
    source = path.expanduser().absolute()

    async def go() -> backups.Snapshot:
        async with opened(settings) as store:
            live = await store.workers.live()
            if live and not force:
                names = ", ".join(f"{w.id} ({w.state.value})" for w in live)
                raise Conflict(
                    f"workers are running: {names}. Stop them first, or pass --force "
                    "(their sessions are then recovered when their leases expire)"
                )
            snapshot = await backups.restore(store.db, source, head=HEAD)
            await migrate(store.db)
            return snapshot

    snapshot = run_async(go())
    out.print(
        f"restored {snapshot.sessions} sessions ({snapshot.events} events) from {snapshot.path}"
    )
