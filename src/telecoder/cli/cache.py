"""``telecoder cache``: the setup cache of this host (``setupcache``).

Local only, like ``hooks``: the entries live under ``$TELECODER_HOME/cache/setup`` of the host
whose workers made them; each worker host has its own, which no server holds.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from telecoder.cli.common import load_settings
from telecoder.cli.output import age, err, out, print_json, short
from telecoder.errors import Conflict
from telecoder.setupcache import SetupCache

app = typer.Typer(
    help="The setup cache: what .telecoder.yml setup commands made, kept per key.",
    no_args_is_help=True,
)


def _cache() -> SetupCache:
    settings = load_settings()
    return SetupCache(settings.setup_cache_dir, settings.cache_max)


def size_text(size: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}{unit}"
    return f"{size}B"


@app.command("list")
def list_entries(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the entries, most recently used first; their size is on disk, spare included."""
    cache = _cache()
    entries = cache.entries()
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    if not entries:
        err.print(f"no setup cache entries in {cache.root}")
        return
    table = Table("key", "size", "used", "repo", "paths", "commands")
    for e in entries:
        table.add_row(
            e.key[:12] + (" (in use)" if e.in_use else ""),
            size_text(e.size),
            age(e.used),
            escape(short(e.repo, 40)),
            escape(short(" ".join(e.paths), 40)),
            escape(short(" && ".join(e.commands), 50)),
        )
    out.print(table)
    total = sum(e.size for e in entries)
    limit = size_text(cache.max_bytes) if cache.enabled else "off"
    err.print(f"{len(entries)} entries, {size_text(total)} of {limit} (TELECODER_CACHE_MAX)")


@app.command("clear")
def clear(
    key: Annotated[
        str | None, typer.Argument(help="The entry's key (all entries when omitted).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was removed.")] = False,
) -> None:
    """Remove one entry, or all of them; an entry in use is left (exit 3: no such key)."""
    started = time.monotonic()
    removed, busy = _cache().clear(key)
    if key is not None and busy:
        raise Conflict(f"setup cache entry {key} is in use (a session is building or restoring it)")
    if as_json:
        print_json({"removed": removed, "in_use": busy})
        return
    took = int((time.monotonic() - started) * 1000)
    err.print(f"removed {len(removed)} entries in {took} ms")
    for k in busy:
        err.print(f"{k} is in use: left")
