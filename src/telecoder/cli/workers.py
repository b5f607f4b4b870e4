"""``telecoder workers``: the worker processes, where they run, and whether they are alive;
``telecoder workers drain ID`` / ``resume ID``: a drained worker finishes what it runs and claims
nothing new (within a heartbeat) until resumed. Local store, or ``--server`` (admins)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.control import describe
from telecoder.cli.options import TOKEN_ENV, ServerOption
from telecoder.cli.output import age, err, out, print_json, print_plain, whole_columns_table
from telecoder.domain import WorkerInfo, WorkerState

_STATE_STYLE = {
    WorkerState.IDLE: "cyan",
    WorkerState.WORKING: "green",
    WorkerState.DRAINING: "yellow",
    WorkerState.OFFLINE: "dim",
}

if TYPE_CHECKING:
    from telecoder.store import PauseState


# An offline worker is listed this long after its last heartbeat (--all: always).
DEAD_SHOWN_SECONDS = 3600.0
WORKER_COLUMNS = (
    "ID", "STATE", "HOST", "PID", "SLOTS", "ENGINES", "CPU", "LOAD", "RAM", "UP", "SEEN"
)  # fmt: skip

workers_app = typer.Typer(
    help="List workers: host, pid, slots, engines, state (idle/working/draining/offline); "
    "drain or resume one.",
    invoke_without_command=True,
    rich_markup_mode=None,
)

WorkerArg = Annotated[str, typer.Argument(help="The worker's id (telecoder workers).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON object.")]


@workers_app.callback()
def workers(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also workers offline for more than an hour.")
    ] = False,
    live: Annotated[bool, typer.Option("--live", help="Only workers that are up.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List workers: host, pid, slots, engines, state (idle/working/draining/offline);
    drain or resume one."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()

    async def go() -> tuple[list[WorkerInfo], PauseState]:
        async with opened(settings) as store:
            found = await store.workers.list(include_offline=not live)
            return found, await store.control.pause_state()

    found, pause = run_async(go())
    if not show_all and not live:
        since = time.time() - DEAD_SHOWN_SECONDS
        found = [w for w in found if w.state != WorkerState.OFFLINE or w.last_heartbeat >= since]
    if as_json:
        print_json([w.to_dict() for w in found])
        return
    if pause.paused:
        err.print(describe(pause))  # on stderr: the table stays the only thing on stdout
    if not found:
        err.print("no workers")
    elif out.is_terminal:
        out.print(workers_table(found))
    else:
        print_plain(WORKER_COLUMNS, [_row(w) for w in found])


def _row(w: WorkerInfo) -> tuple[str, ...]:
    return (
        w.id,
        w.state.value,
        w.host,
        str(w.pid),
        f"{w.running}/{w.capacity}",
        ",".join(w.engines) or "any",
        *_host(w),
        age(w.started_at),
        f"{age(w.last_heartbeat)} ago",
    )


def workers_table(found: list[WorkerInfo]) -> Table:
    rows = [_row(w) for w in found]
    table = whole_columns_table(WORKER_COLUMNS, rows, whole=("ID", "STATE"))
    for w, row in zip(found, rows, strict=True):
        cells = [escape(c) for c in row]
        cells[1] = f"[{_STATE_STYLE[w.state]}]{w.state.value}[/]"
        table.add_row(*cells)
    return table


def _host(w: WorkerInfo) -> tuple[str, str, str]:
    """CPU, LOAD and RAM (available/total) as its last heartbeat reported them."""
    stats = w.stats
    if stats is None:
        return "-", "-", "-"
    gib = 1024**3
    ram = "-"
    if stats.mem_total:
        ram = f"{(stats.mem_available or 0) / gib:.1f}/{stats.mem_total / gib:.1f}G"
    load = "-" if stats.load1 is None else f"{stats.load1:.2f}"
    return str(stats.cpu_count or "-"), load, ram


@workers_app.command("drain")
def drain(worker_id: WorkerArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Drain a worker: it finishes its running sessions and claims nothing new."""
    _set_drain(worker_id, True, server=server, as_json=as_json)


@workers_app.command("resume")
def resume(worker_id: WorkerArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Resume a drained worker: it claims sessions again."""
    _set_drain(worker_id, False, server=server, as_json=as_json)


def _set_drain(worker_id: str, drain: bool, *, server: str | None, as_json: bool) -> None:
    async def local() -> dict[str, Any]:
        async with opened(load_settings()) as store:
            return (await store.workers.set_drain(worker_id, drain)).to_dict()

    async def remote(url: str) -> dict[str, Any]:
        from telecoder.client import Client

        async with Client(url, token=os.environ.get(TOKEN_ENV) or None) as api:
            return await api.set_drain(worker_id, drain)

    found = run_async(remote(server) if server else local())
    if as_json:
        print_json(found)
    elif drain:
        out.print(f"worker {escape(worker_id)} drained: running sessions finish, none starts")
    else:
        out.print(f"worker {escape(worker_id)} resumed: it claims sessions again")
