"""``telecoder council start|wait|tally|report|list|show``: a council of reviewers (``council``).

``start`` queues the reviewers (read-only answer sessions of one run) for the workers —
``telecoder serve`` or ``telecoder worker`` — and prints the run; ``wait`` blocks until every
reviewer ended (exit 10 on its timeout); ``tally`` groups their recommendations; ``report``
writes the markdown report. With ``--json`` every command prints JSON, and an error is
``{"error": {"code", "message"}}`` on stdout with the same exit code.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from telecoder import council, council_report, council_target, registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import Exit, err, out, print_json
from telecoder.council_merge import ModelMerge
from telecoder.domain import RunKind
from telecoder.endings import choose_forge
from telecoder.errors import (
    BadInput,
)
from telecoder.intake import Accepted, Request, accept
from telecoder.settings import Settings
from telecoder.store import Store

app = typer.Typer(
    help="A council of reviewers: one target, several reviewers, their recommendations tallied.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Json = dict[str, Any]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RunArg = Annotated[str, typer.Argument(help="The council's run id (run_…).")]

_DIFF_SUFFIXES = (".diff", ".patch")


def _finish(go: Callable[[], Coroutine[Any, Any, Exit]]) -> NoReturn:
    """Run ``go`` and exit with its code; an error is the CLI's (``main``: one line on
    stderr, or the JSON error with ``--json``)."""
    raise typer.Exit(run_async(go()))


def _intake(settings: Settings) -> council.Intake:
    workspace, forges = build_workspace(settings), build_forges(settings)

    async def check(request: Request) -> Accepted:
        engines = registry.names("engines")
        return await accept(
            request, settings=settings, workspace=workspace, engines=engines, forges=forges
        )

    return check


async def _target(settings: Settings, text: str, repo: str, base: str | None) -> council.Target:
    found = await _what(settings, text, repo, base)
    if found.kind in ("question", "diff") and base is not None:
        return dataclasses.replace(found, ref=base)  # reviewed at that branch
    return found


async def _what(settings: Settings, text: str, repo: str, base: str | None) -> council.Target:
    if text == "-":
        return council.diff_target(sys.stdin.read())
    if text.endswith(_DIFF_SUFFIXES):
        path = Path(text).expanduser()
        if not path.is_file():
            raise BadInput(f"no diff file {text}")
        return council.diff_target(path.read_text(errors="replace"))
    workspace = build_workspace(settings)
    source = await workspace.resolve(repo)
    forge = choose_forge(build_forges(settings), settings.forge, source.remote_url)
    await forge.ready(source.remote_url)
    env = forge.git_env(source.remote_url)
    return await council_target.resolve(
        text, remote_url=source.remote_url, base=base, settings=settings, env=env
    )


@app.command("start")
def start(
    target: Annotated[
        str,
        typer.Argument(
            help="What to review: a question, a diff (a .diff/.patch file, or - for stdin), a "
            "branch of the repository, or a pull request (its URL, #N or N)."
        ),
    ],
    repo: Annotated[str, typer.Option("--repo", help="The repository (a path or git URL).")] = ".",
    reviewers: Annotated[
        str | None,
        typer.Option(
            "--reviewers",
            help="Comma-separated, each ENGINE or ENGINE:MODEL (2 to 7); default: "
            "TELECODER_COUNCIL_REVIEWERS, else three different installed engines.",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="A branch is compared with this (default: the remote's default branch); a "
            "question or diff is reviewed at it.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Seconds each reviewer may take.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Put a target to a council of reviewers (queued for the workers)."""
    given = (
        [r for r in (reviewers or "").split(",") if r.strip()] if reviewers is not None else None
    )

    async def go() -> Exit:
        if given is not None and not given:
            raise BadInput("--reviewers is empty")
        if timeout is not None and timeout <= 0:
            raise BadInput("the timeout must be positive")
        settings = load_settings()
        known = registry.names("engines")
        chosen = council.reviewers_for(given, settings, known=known)
        found = await _target(settings, target, repo, base)
        async with opened(settings) as store:
            run, _, warnings = await council.create(
                store, _intake(settings), found, chosen, repo=repo, timeout_seconds=timeout
            )
            for warning in warnings:
                err.print(f"[yellow]warning:[/] {escape(warning)}")
            data = council.council_json(*await council.council_run(store, run.id))
        if as_json:
            print_json(data)
        else:
            _print_council(data)
            err.print(
                f"queued for the workers (telecoder serve / telecoder worker); "
                f"then: telecoder council wait {run.id}"
            )
        return Exit.OK

    _finish(go)


@app.command("wait")
def wait(
    run_id: RunArg,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Give up after this many seconds (exit 10).", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Block until every reviewer ended."""

    async def go() -> Exit:
        async with opened(load_settings()) as store:
            run, sessions = await council.wait(store, run_id, seconds=timeout)
            data = council.council_json(run, sessions)
        if as_json:
            print_json(data)
        else:
            _print_council(data)
        return Exit.OK

    _finish(go)


async def _tally(store: Store, settings: Settings, run_id: str, merge: bool) -> Json:
    merger = ModelMerge.from_settings(settings) if merge else None
    run, result, reviews = await council.tally(store, run_id, merge=merger)
    return council.tally_json(run, result, reviews)


@app.command("tally")
def tally(
    run_id: RunArg,
    as_json: JsonOption = False,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="Then ask the judge model (TELECODER_JUDGE_MODEL) which groups to join.",
        ),
    ] = False,
) -> None:
    """Group the reviewers' recommendations: consensus, majority, minority."""

    async def go() -> Exit:
        settings = load_settings()
        async with opened(settings) as store:
            data = await _tally(store, settings, run_id, merge)
        if as_json:
            print_json(data)
        else:
            _print_tally(data)
        return Exit.OK

    _finish(go)


@app.command("report")
def report(
    run_id: RunArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Write it here (- prints it); default: runs/RUN/council-report.md in "
            "TELECODER_HOME.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the council's markdown report."""

    async def go() -> Exit:
        settings = load_settings()
        async with opened(settings) as store:
            data = await _tally(store, settings, run_id, False)
        text = council_report.markdown(data)
        if output is not None and str(output) == "-":
            sys.stdout.write(text)
            return Exit.OK
        path = output or council_report.default_path(settings.home, run_id)
        council_report.write(path, text)
        if as_json:
            print_json({"run": run_id, "path": str(path), "note": data["note"]})
        else:
            out.print(str(path), highlight=False)
        return Exit.OK

    _finish(go)


@app.command("list")
def list_councils(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The councils, newest first."""

    async def go() -> Exit:
        async with opened(load_settings()) as store:
            runs = [r for r in await store.runs.list(limit=500) if r.kind == RunKind.COUNCIL]
        runs = runs[:limit]
        if as_json:
            print_json([r.to_dict() for r in runs])
            return Exit.OK
        for r in runs:
            reviewers = ", ".join(r.spec.get("reviewers") or [])
            out.print(f"{r.id}  {r.status.value:<9}  {escape(r.name or '')}  [{escape(reviewers)}]")
        return Exit.OK

    _finish(go)


@app.command("show")
def show(run_id: RunArg, as_json: JsonOption = False) -> None:
    """A council: its target and each reviewer's status."""

    async def go() -> Exit:
        async with opened(load_settings()) as store:
            data = council.council_json(*await council.council_run(store, run_id))
        if as_json:
            print_json(data)
        else:
            _print_council(data)
        return Exit.OK

    _finish(go)


def _print_council(data: Json) -> None:
    run = data["run"]
    out.print(f"[bold]{run['id']}[/] · {escape(run['name'] or '')} · {run['status']}")
    for r in data["reviewers"]:
        why = f" — {r['why']}" if r.get("why") and r["status"] != "pending" else ""
        out.print(
            f"  {escape(r['reviewer']):<28} {r['session_id']}  {r['session_status']:<10} "
            f"{r['status']}{escape(why)}"
        )


def _print_tally(data: Json) -> None:
    out.print(f"[bold]{data['run']['id']}[/] · tally {escape(data['note'])}")
    for label in ("consensus", "majority", "minority"):
        groups = data[label]
        out.print(f"\n[bold]{label}[/] ({len(groups)})")
        for g in groups:
            loc = g["location"]
            where = (
                f"{loc['file']}:{loc['line']}"
                if loc and loc.get("line")
                else (loc or {}).get("file") or "general"
            )
            out.print(
                f"  [{g['severity']}] {escape(g['title'])} · {escape(where)} · "
                f"{escape(', '.join(g['reviewers']))}"
            )
    if data["missing"]:
        out.print(f"\n[bold]missing[/]: {escape(', '.join(data['missing']))}")
