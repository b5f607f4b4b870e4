"""``telecoder workers``: the worker processes, where they run, and whether they are alive."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import age, err, out, print_json
from telecoder.domain import WorkerInfo, WorkerState

_STATE_STYLE = {
    WorkerState.IDLE: "cyan",
    WorkerState.WORKING: "green",
    WorkerState.DRAINING: "yellow",
    WorkerState.OFFLINE: "dim",
}


def workers(
    include_offline: Annotated[
        bool, typer.Option("--all/--live", help="Include workers that are offline.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List workers: host, pid, slots, engines, state (idle/working/draining/offline)."""
    settings = load_settings()

    async def go() -> list[WorkerInfo]:
        async with opened(settings) as store:
            return await store.workers.list(include_offline=include_offline)

    found = run_async(go())
    if as_json:
        print_json([w.to_dict() for w in found])
    elif found:
        out.print(workers_table(found))
    else:
        err.print("no workers")


def workers_table(found: list[WorkerInfo]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "STATE", "HOST", "PID", "SLOTS", "ENGINES", "UP", "SEEN"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for w in found:
        style = _STATE_STYLE[w.state]
        table.add_row(
            escape(w.id),
            f"[{style}]{w.state.value}[/]",
            escape(w.host),
            str(w.pid),
            f"{w.running}/{w.capacity}",
            escape(", ".join(w.engines) or "any"),
            age(w.started_at),
            f"{age(w.last_heartbeat)} ago",
        )
    return table
