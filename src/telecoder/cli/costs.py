"""``telecoder costs`` (what model traffic cost) and ``telecoder run --estimate``.

Both read the local database, or a server's API with ``--server``; either way they print from
the API's JSON shape (``Report.to_dict``, ``Estimate.to_dict``), so ``--json`` is the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from telecoder import engine_choice, registry
from telecoder.assemble import build_workspace
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json, short
from telecoder.errors import BadInput, EngineNotFound
from telecoder.estimate import MAX_PROMPT, estimate
from telecoder.store.costs import By
from telecoder.timerange import FORMS, parse_range
from telecoder.urls import is_url

Json = dict[str, Any]


def costs(
    by: Annotated[
        str,
        typer.Option(help="Group by model, engine, repo, user, day, endpoint or session."),
    ] = "model",
    since: Annotated[
        str | None, typer.Option(help=f"From this time on: {FORMS}.", show_default=False)
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Up to this time (a date: to the end of that day).", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many groups.", min=1, max=1000)] = 50,
    top: Annotated[
        int, typer.Option(help="Also list this many costliest sessions.", min=0, max=100)
    ] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """What model requests cost (metered by the gateway): totals, groups, top sessions."""
    try:
        group = By(by)
    except ValueError:
        known = ", ".join(b.value for b in By)
        raise BadInput(f"unknown --by {by!r} (known: {known})") from None
    start, stop = parse_range(since, until)  # bad times fail here, before any connection
    if server:
        from telecoder.cli.remote import connect

        async def ask() -> Json:
            async with connect(server) as api:
                return await api.costs(
                    by=group.value, since=since, until=until, top=top, limit=limit
                )

        report = run_async(ask())
    else:
        settings = load_settings()

        async def read() -> Json:
            async with opened(settings) as store:
                found = await store.costs.report(
                    by=group, since=start, until=stop, top=top, limit=limit
                )
            return found.to_dict()

        report = run_async(read())
    if as_json:
        print_json(report)
    else:
        print_report(report)


def print_report(report: Json) -> None:
    total = report["total"]
    if not total["requests"]:
        err.print(f"no model requests {_period(report)}".rstrip())
        return
    line = f"[bold]{_cost(total)}[/] · {total['requests']:,} requests · "
    line += f"{total['input_tokens']:,} in / {total['output_tokens']:,} out tokens"
    if total["cache_read_tokens"] or total["cache_write_tokens"]:
        line += f" · cache {total['cache_read_tokens']:,} read / "
        line += f"{total['cache_write_tokens']:,} written"
    if period := _period(report):
        line += f" [dim]{period}[/]"
    out.print(line)
    if unpriced := total["unpriced_requests"]:
        models = ", ".join(report["unpriced_models"]) or "unnamed"
        out.print(
            f"[yellow]{unpriced} request{'s' if unpriced != 1 else ''} to models without a known "
            f"price ({escape(models)}): counted, not priced — the cost is at least "
            f"{_money(total)}[/]"
        )
    groups = report["groups"]
    if groups:
        out.print()
        out.print(_table(str(report["by"]).upper(), groups))
        if report["more_groups"]:
            out.print(f"[dim]… the {len(groups)} costliest shown (--limit)[/]")
    if report["top_sessions"] and report["by"] != By.SESSION:
        out.print()
        out.print(_sessions(report["top_sessions"]))


def _table(title: str, groups: list[Json]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column(title, no_wrap=True, overflow="ellipsis", max_width=60)
    for column in ("REQUESTS", "INPUT", "CACHE", "OUTPUT", "COST"):
        table.add_column(column, justify="right", no_wrap=True)
    for g in groups:
        key = g.get("key", g.get("day"))
        table.add_row(escape(str(key)) if key is not None else "[dim](none)[/]", *_cells(g))
    return table


def _sessions(top: list[Json]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    table.add_column("TOP SESSION", no_wrap=True)
    for column in ("REQUESTS", "INPUT", "CACHE", "OUTPUT", "COST"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("PROMPT", overflow="ellipsis", no_wrap=True)
    for s in top:
        prompt = escape(short(s["prompt"], 50)) if s["prompt"] is not None else "[dim](gone)[/]"
        table.add_row(s["session_id"], *_cells(s), prompt)
    return table


def _cells(f: Json) -> list[str]:
    cache = f["cache_read_tokens"] + f["cache_write_tokens"]
    return [
        f"{f['requests']:,}",
        f"{f['input_tokens']:,}",
        f"{cache:,}",
        f"{f['output_tokens']:,}",
        _cost(f),
    ]


def _money(f: Json) -> str:
    usd = float(f["cost_usd"])
    return f"${usd:.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def _cost(f: Json) -> str:
    """``$0.53``, or ``$0.53 +2?`` with two requests that had no price."""
    unpriced = f["unpriced_requests"]
    return _money(f) + (f" [yellow]+{unpriced}?[/]" if unpriced else "")


def _period(report: Json) -> str:
    """``since 2026-11-20 00:00 UTC until …``; empty for all time."""
    parts = [f"{k} {_when(report[k])}" for k in ("since", "until") if report[k]]
    return " ".join(parts)


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- run --estimate ---


def estimate_run(
    server: str | None,
    *,
    prompt: str,
    repo: str,
    engine: str | None,
    model: str | None,
    as_json: bool,
) -> None:
    """Print what the task would likely cost and run nothing."""
    if server:
        from telecoder.cli.remote import connect

        # A path is made absolute here: the server resolves it on its machine, as for a run.
        where = repo if is_url(repo) else str(Path(repo).expanduser().absolute())

        async def ask() -> Json:
            async with connect(server) as api:
                return await api.estimate(
                    repo=where, prompt=prompt[:MAX_PROMPT], engine=engine, model=model
                )

        found = run_async(ask())
    else:
        settings = load_settings()
        known = registry.names("engines")
        chosen = engine or engine_choice.default_engine(settings, known)
        if chosen is None:
            raise EngineNotFound(
                engine_choice.no_engine(known, engine_choice.environment(settings))
            )
        if chosen not in known:
            raise EngineNotFound(f"unknown engine {chosen!r} (known: {', '.join(sorted(known))})")
        if not prompt.strip():
            raise BadInput("the prompt is empty")

        async def read() -> Json:
            source = await build_workspace(settings).resolve(repo)
            async with opened(settings) as store:
                done = await estimate(
                    store, repo=source.spec, engine=chosen, model=model or None, prompt=prompt
                )
            return done.to_dict()

        found = run_async(read())
    if as_json:
        print_json(found)
    else:
        out.print(estimate_line(found))


def estimate_line(e: Json) -> str:
    what = escape(e["engine"] + (f" ({e['model']})" if e["model"] else ""))
    if not e["based_on"]:
        return f"no history: no finished session of {escape(e['repo'])} to estimate {what} from"
    many = "session" if e["based_on"] == 1 else "sessions"
    line = f"estimate: [bold]${e['median_usd']:.2f}[/] (median"
    if e["based_on"] > 1:
        line += f"; ${e['low_usd']:.2f} – ${e['high_usd']:.2f}"
    line += f") for {what}, from {e['based_on']} {many}: {escape(e['basis'])}"
    if e["median_tokens"]:
        line += f" · ~{e['median_tokens']:,} tokens"
    return line
