"""``telecoder db``: the database's schema, backups and restores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from telecoder import backups
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import out
from telecoder.errors import BadInput, Conflict
from telecoder.store.backup import Snapshot
from telecoder.store.db import Database
from telecoder.store.migrations import HEAD, current_revision
from telecoder.store.migrations import upgrade as migrate

app = typer.Typer(help="Manage the database.", no_args_is_help=True)


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
    path: Annotated[
        Path | None,
        typer.Argument(help="Where to write the backup (must not exist); or give --dir."),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Write telecoder-<UTC time>.db (.dump on PostgreSQL) here and keep the newest "
            "--keep of them.",
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(help="With --dir: backups kept [default: TELECODER_BACKUP_KEEP, 3].", min=1),
    ] = None,
) -> None:
    """Back the database up, consistently, even while workers run (PostgreSQL: pg_dump)."""
    if (path is None) == (directory is None):
        raise BadInput("give PATH or --dir DIR (one of them)")
    if keep is not None and directory is None:
        raise BadInput("--keep goes with --dir")
    settings = load_settings()
    target = path.expanduser().absolute() if path is not None else None

    async def go() -> tuple[Snapshot, list[Path]]:
        async with opened(settings) as store:
            if target is not None:
                return await backups.backup(store.db, target), []
            assert directory is not None
            return await backups.backup_into(
                store.db, directory.expanduser().absolute(), keep=keep or settings.backup_keep
            )

    snapshot, removed = run_async(go())
    out.print(
        f"backed up {snapshot.sessions} sessions ({snapshot.events} events, "
        f"revision {snapshot.revision}, {snapshot.size} bytes) to {snapshot.path}"
    )
    for old in removed:
        out.print(f"removed {old}")


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="A file made by `telecoder db backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Restore even though workers are running.")
    ] = False,
) -> None:
    """Replace the database with the backup at PATH (refused while workers run)."""
    settings = load_settings()
    source = path.expanduser().absolute()

    async def go() -> Snapshot:
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
