"""``telecoder runs list|show|cancel|retry-failed``: runs (sessions that belong together).

Locally they read and write the database; with ``--server`` they ask a TeleCoder server. Both
print the same JSON (``runs.run_json``, the API's shape), so one renderer serves both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from telecoder import runs
from telecoder.amounts import shown_duration
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import out, print_json
from telecoder.client import Client
from telecoder.store import Store

app = typer.Typer(
    help="Runs: sessions that belong together (a fan-out, a plan's task graph, a job's firing).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RunArg = Annotated[str, typer.Argument(help="The run's id (run_…).")]


def _call(
    server: str | None,
    local: Callable[[Store], Awaitable[Any]],
    remote: Callable[[Client], Awaitable[Any]],
) -> Any:
    if server:
        from telecoder.cli.remote import connect

        async def over_http() -> Any:
            async with connect(server) as api:
                return await remote(api)

        return run_async(over_http())
    settings = load_settings()

    async def here() -> Any:
        async with opened(settings) as store:
            return await local(store)

    return run_async(here())


@app.command("list")
def list_runs(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """The runs, newest first, with their totals."""

    async def local(store: Store) -> list[dict[str, Any]]:
        found = []
        for run in await store.runs.list(limit=limit):
            data = runs.run_json(run, await store.runs.sessions(run.id), [])
            found.append({k: v for k, v in data.items() if k not in ("sessions", "deps")})
        return found

    found: list[dict[str, Any]] = _call(server, local, lambda api: api.runs(limit=limit))
    if as_json:
        print_json(found)
        return
    if not found:
        out.print("no runs yet")
        return
    table = Table("RUN", "STATUS", "KIND", "NAME", "SESSIONS", "TIME", "COST", box=None)
    for run in found:
        t = run["totals"]
        table.add_row(
            run["id"],
            run["status"],
            run["kind"],
            escape(run["name"] or ""),
            _counts(t),
            shown_duration(t["wall_seconds"]),
            f"${t['cost_usd']:.2f}",
        )
    out.print(table)


@app.command("show")
def show(run_id: RunArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """A run: its sessions, what each waits for, and its totals (exit 3 for an unknown run)."""
    data = _call(server, lambda store: runs.load(store, run_id), lambda api: api.run(run_id))
    if as_json:
        print_json(data)
    else:
        _show(data)


@app.command("cancel")
def cancel(run_id: RunArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Cancel every session of the run that has not ended; running ones are stopped by their
    workers (exit 4 when every session had already ended)."""

    async def local(store: Store) -> dict[str, Any]:
        await runs.cancel_run(store, run_id)
        return await runs.load(store, run_id)

    data = _call(server, local, lambda api: api.cancel_run(run_id))
    _done(data, as_json, "cancelling")


@app.command("retry-failed")
def retry_failed(run_id: RunArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Queue the run's failed, dead and cancelled sessions again; what they skipped waits for
    them again (exit 4 when nothing failed)."""

    async def local(store: Store) -> dict[str, Any]:
        await runs.retry_failed(store, run_id)
        return await runs.load(store, run_id)

    data = _call(server, local, lambda api: api.retry_failed(run_id))
    _done(data, as_json, "retrying")


def _done(data: dict[str, Any], as_json: bool, doing: str) -> None:
    if as_json:
        print_json(data)
    else:
        out.print(f"{data['id']} {data['status']} ({doing}): {_counts(data['totals'])}")


def _counts(totals: dict[str, Any]) -> str:
    return ", ".join(f"{n} {status}" for status, n in totals["statuses"].items())


def _show(data: dict[str, Any]) -> None:
    t = data["totals"]
    title = f"{data['id']} · {data['kind']}" + (f" · {data['name']}" if data["name"] else "")
    out.print(escape(title))
    out.print(f"status: {data['status']} — {t['sessions']} sessions: {_counts(t)}")
    out.print(
        f"time: {shown_duration(t['wall_seconds'])} · cost: ${t['cost_usd']:.4f} · "
        f"tokens: {t['input_tokens']} in / {t['output_tokens']} out"
    )
    names = {s["id"]: s["task_key"] or s["id"] for s in data["sessions"]}
    kinds = {(d["session_id"], d["depends_on"]): d["after"] for d in data["deps"]}
    table = Table("TASK", "STATUS", "AFTER", "SESSION", "REPO", "COST", "PR", box=None)
    for s in data["sessions"]:
        after = [
            names.get(dep, dep) + ("?" if kinds.get((s["id"], dep)) == "after_any" else "")
            for dep in s["depends_on"]
        ]
        table.add_row(
            escape(names[s["id"]]),
            s["status"],
            escape(", ".join(after)),
            s["id"],
            escape(s["repo"]),
            f"${s['cost_usd']:.4f}",
            escape(s["pr_url"] or ""),
        )
    out.print(table)
    verdict = (data.get("spec") or {}).get("verdict")
    if data["kind"] == "best_of" and verdict and verdict.get("state") == "decided":
        # Best of N (bestof.py): the winner and why, or why none won.
        pr = f" · {verdict['pr_url']}" if verdict.get("pr_url") else ""
        won = f"winner: {verdict['winner']}{pr}" if verdict.get("winner") else "no winner"
        out.print(escape(f"{won} — {verdict.get('reasons')}"))
    if data["deps"]:
        edges = [
            f"{names.get(d['depends_on'], d['depends_on'])} → {names.get(d['session_id'])}"
            + (" (whatever it does)" if d["after"] == "after_any" else "")
            for d in data["deps"]
        ]
        out.print("graph: " + escape("; ".join(edges)))
    for url in t["pr_urls"]:
        out.print(f"PR: {escape(url)}")
