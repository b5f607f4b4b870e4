"""``telecoder db``: the database's schema."""

from __future__ import annotations

import typer

from telecoder.cli.common import load_settings, run_async
from telecoder.cli.output import out
from telecoder.store.db import Database
from telecoder.store.migrations import current_revision
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
