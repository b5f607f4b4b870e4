"""Best of N on the command line: ``telecoder run PROMPT --attempts N [--engines a,b,c]`` (here,
or ``--detach`` / ``--server``), ``telecoder best-of show RUN`` and ``telecoder best-of pick RUN
SESSION``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape

from telecoder import bestof, registry
from telecoder.assemble import build_forges, build_judging, build_worker, build_workspace
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import Exit, err, out, print_json
from telecoder.domain import Run, Session
from telecoder.intake import Accepted, Request, accept
from telecoder.settings import Settings
from telecoder.store import Store

app = typer.Typer(help="Best-of-N runs: their candidates, the verdict, a person's pick.")
Json = dict[str, Any]


def engines_option(value: str | None) -> list[str]:
    return [e.strip() for e in (value or "").split(",") if e.strip()]


def start(
    request: Request,
    *,
    attempts: int | None,
    engines: list[str],
    detach: bool,
    as_json: bool,
    server: str | None,
) -> None:
    """``telecoder run --attempts/--engines``: make the run; run its candidates here (or leave
    them to the workers with ``--detach``) and print the verdict."""
    bestof.engines_for(attempts, engines)  # bad input before anything is asked
    if server:
        return _start_remote(server, request, attempts, engines, detach, as_json)
    settings = load_settings()

    async def go() -> Exit:
        async with opened(settings) as store:
            run, sessions, warnings = await bestof.create(
                store, _intake(settings), request, attempts=attempts, engines=engines
            )
            for warning in warnings:
                err.print(f"[yellow]warning:[/] {warning}")
            if not detach:
                await _run_here(settings, store, run, sessions, as_json)
            data = await comparison(store, run.id)
        _print(data, as_json)
        verdict = data["verdict"]
        if detach or (verdict and verdict.get("winner")):
            return Exit.OK
        return Exit.TASK_FAILED

    raise typer.Exit(run_async(go()))


def _intake(settings: Settings) -> bestof.Intake:
    workspace, forges = build_workspace(settings), build_forges(settings)

    async def check(request: Request) -> Accepted:
        engines = registry.names("engines")
        return await accept(
            request, settings=settings, workspace=workspace, engines=engines, forges=forges
        )

    return check


async def _run_here(
    settings: Settings, store: Store, run: Run, sessions: list[Session], as_json: bool
) -> None:
    """The candidates, at once, in this process (each as a worker runs it, with its retries);
    the last to end judges the run."""
    worker = build_worker(settings, store, one_shot=True)
    if not as_json:
        err.print(f"run [bold]{run.id}[/] · best of {len(sessions)}")

    async def one(session: Session) -> None:
        while (claimed := await store.queue.claim(worker.id, only=session.id)) is not None:
            await worker.execute(claimed)
        if not as_json:
            ended = await store.sessions.get(session.id)
            err.print(f"  {ended.engine} ({ended.id}): {ended.status.value}")

    await asyncio.gather(*(one(s) for s in sessions))
    await build_judging(settings, store).judge(run.id)  # (if a retry left it to a worker)


async def comparison(store: Store, run_id: str) -> Json:
    """The shape of ``GET /api/runs/{id}/compare``."""
    run = await store.runs.get(run_id)
    candidates = [
        {"session": s.to_dict(), "passed": (lost := bestof.standing(s)) is None, "lost": lost}
        for s in await store.runs.sessions(run.id)
    ]
    return {"run": run.to_dict(), "candidates": candidates, "verdict": bestof.verdict_of(run)}


def _start_remote(
    server: str,
    request: Request,
    attempts: int | None,
    engines: list[str],
    detach: bool,
    as_json: bool,
) -> None:
    from telecoder.cli.remote import absolute, connect

    body = {
        "repo": absolute(request.repo),
        "prompt": request.prompt,
        "engine": request.engine,
        "model": request.model,
        "base": request.base,
        "forge": request.forge,
        "priority": request.priority,
        "timeout_seconds": request.timeout_seconds,
        "tier": request.tier,
        "budget_usd": request.budget_usd,
        "attempts": attempts,
        "engines": engines,
    }

    async def go() -> Exit:
        async with connect(server) as api:
            created = await api.best_of({k: v for k, v in body.items() if v is not None})
            for warning in created.get("warnings", []):
                err.print(f"[yellow]warning:[/] {warning}")
            run_id = created["run"]["id"]
            data = await api.compare(run_id)
            while not detach and not _decided(data):
                await asyncio.sleep(1.0)
                data = await api.compare(run_id)
        _print(data, as_json)
        verdict = data["verdict"]
        return Exit.OK if detach or (verdict and verdict.get("winner")) else Exit.TASK_FAILED

    raise typer.Exit(run_async(go()))


def _decided(data: Json) -> bool:
    return bool(data["verdict"]) and data["verdict"].get("state") == "decided"


def _print(data: Json, as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    run = data["run"]
    out.print(f"[bold]{run['id']}[/] · {escape(run['name'] or '')} · {run['status']}")
    for c in data["candidates"]:
        s = c["session"]
        mark = "passed" if c["passed"] else f"lost: {c['lost']}"
        out.print(f"  {s['id']}  {s['engine']:<12} {s['branch']}  {escape(mark)}")
    verdict = data["verdict"]
    if not verdict:
        out.print("verdict: not yet (candidates still running)")
    elif verdict.get("state") != "decided":
        out.print("verdict: being judged")
    elif verdict.get("winner"):
        pr = f" · {verdict['pr_url']}" if verdict.get("pr_url") else ""
        out.print(f"winner: [bold]{verdict['winner']}[/]{pr}")
        out.print(f"why: {escape(str(verdict.get('reasons')))}")
    else:
        out.print(f"no winner: {escape(str(verdict.get('reasons')))}")


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """A best-of-N run's candidates and its verdict."""

    async def go() -> Exit:
        if server:
            from telecoder.cli.remote import connect

            async with connect(server) as api:
                data = await api.compare(run_id)
        else:
            async with opened(load_settings()) as store:
                data = await comparison(store, run_id)
        _print(data, as_json)
        return Exit.OK

    raise typer.Exit(run_async(go()))


@app.command("pick")
def pick(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    session_id: Annotated[str, typer.Argument(help="The candidate to open the PR for.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """Open the pull request for another passing candidate than the judge's."""

    async def go() -> Exit:
        if server:
            from telecoder.cli.remote import connect

            async with connect(server) as api:
                data = await api.pick(run_id, session_id)
        else:
            settings = load_settings()
            async with opened(settings) as store:
                await build_judging(settings, store).pick(run_id, session_id)
                data = await comparison(store, run_id)
        _print(data, as_json)
        return Exit.OK

    raise typer.Exit(run_async(go()))
