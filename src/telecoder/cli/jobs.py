"""``telecoder jobs`` (cron jobs) and ``telecoder templates`` (named prompts)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from telecoder import jobs as defs
from telecoder import registry, runs, scheduler, templates
from telecoder.assemble import build_forges, build_workspace
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json, short
from telecoder.errors import BadInput
from telecoder.intake import Accepted, Request, accept
from telecoder.settings import Settings

app = typer.Typer(
    help="Cron jobs: tasks fired on a schedule by `telecoder serve` and workers.",
    no_args_is_help=True,
)
templates_app = typer.Typer(help="Named prompts with variables.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def cli_intake(settings: Settings) -> scheduler.Intake:
    """The check every request passes before it is queued, as the CLI makes it."""
    workspace, forges = build_workspace(settings), build_forges(settings)

    async def check(request: Request) -> Accepted:
        engines = registry.names("engines")
        return await accept(
            request, settings=settings, workspace=workspace, engines=engines, forges=forges
        )

    return check


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The job's name.")],
    schedule: Annotated[
        str | None, typer.Option(help="Cron (5 fields), @hourly, @daily, … or '@every 30s'.")
    ] = None,
    repo: Annotated[
        list[str] | None, typer.Option("--repo", "-r", help="A repository (repeatable).")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="The task.")] = None,
    template: Annotated[str | None, typer.Option(help="A template instead of a prompt.")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="A template variable NAME=VALUE.")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone of the schedule.")] = "UTC",
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="Agent to run.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model for it.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the definition from a YAML file.")
    ] = None,
) -> None:
    """Define a job in $TELECODER_HOME/jobs/NAME.yaml (it fires from its next slot on)."""
    settings = load_settings()
    defs.check_name(name)
    if file is not None:
        try:
            data: Any = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise BadInput(f"cannot read {file}: {e}") from None
    else:
        fields = {
            "schedule": schedule,
            "timezone": timezone,
            "repos": repo or [],
            "prompt": prompt,
            "template": template,
            "vars": templates.parse_vars(var or []),
            "engine": engine,
            "model": model,
        }
        data = {k: v for k, v in fields.items() if v is not None}
    spec = defs.parse(name, data)
    if (settings.jobs_dir / f"{name}.yaml").exists():
        raise BadInput(f"job {name!r} exists: remove it first")

    async def go() -> Path:
        # What would be refused at 3 a.m. is refused now: the template, the repositories.
        await scheduler.check(settings, cli_intake(settings), spec)
        path = defs.save(settings.jobs_dir, name, spec)
        async with opened(settings) as store:
            await store.jobs.resume(name)  # fresh state: slots from now on
        return path

    path = run_async(go())
    nxt = defs.Schedule(spec.schedule, spec.timezone).after(time.time())
    err.print(f"job {name} written to {path}; next run {_when(nxt)}")


@app.command("list")
def list_jobs(as_json: JsonOption = False) -> None:
    """Jobs with their status, last run and next run."""
    settings = load_settings()

    async def go() -> list[dict[str, Any]]:
        async with opened(settings) as store:
            return await scheduler.describe_all(store, settings)

    rows = run_async(go())
    if as_json:
        print_json(rows)
        return
    table = Table("name", "schedule", "status", "last run", "next run")
    for row in rows:
        last = row.get("last_run")
        status = str(row["status"])
        if row.get("paused_reason"):
            status += f": {row['paused_reason']}"
        if row.get("error"):
            status += f": {row['error']}"
        table.add_row(
            escape(str(row["name"])),
            escape(str(row.get("schedule", ""))),
            escape(short(status, 80)),
            "-" if not last else f"{last['id']} {last['status']} {_when(last['created_at'])}",
            _when(row.get("next_run")),
        )
    out.print(table)


@app.command("show")
def show(name: str, as_json: JsonOption = False) -> None:
    """One job: its definition, status, last and next run."""
    settings = load_settings()
    job = defs.load(settings.jobs_dir, name)

    async def go() -> dict[str, Any]:
        async with opened(settings) as store:
            return await scheduler.describe(store, job)

    row = run_async(go())
    if as_json:
        print_json(row)
        return
    for key, value in row.items():
        if key in ("next_run",):
            value = _when(value)
        out.print(f"{key}: {escape(str(value))}")


@app.command("run")
def run_now(name: str, as_json: JsonOption = False) -> None:
    """Fire the job now, outside its schedule; prints the run's id (--json: the run, as
    `telecoder runs show --json`)."""
    settings = load_settings()
    job = defs.load(settings.jobs_dir, name)

    async def go() -> dict[str, Any]:
        async with opened(settings) as store:
            run = await scheduler.fire(store, settings, cli_intake(settings), job)
            return await runs.load(store, run.id)  # as `telecoder runs show --json`

    found = run_async(go())
    if as_json:
        print_json(found)
    else:
        out.print(found["id"])


def _state(name: str, *, pause: str | None, as_json: bool) -> None:
    settings = load_settings()
    job = defs.load(settings.jobs_dir, name)

    async def go() -> dict[str, Any]:
        async with opened(settings) as store:
            if pause is not None:
                await store.jobs.pause(name, pause)
            else:
                await store.jobs.resume(name)
            return await scheduler.describe(store, job)

    row = run_async(go())
    if as_json:
        print_json(row)
    else:
        err.print(f"job {name} {row['status']}")


@app.command("pause")
def pause(
    name: str,
    reason: Annotated[str, typer.Option(help="Why (shown in `jobs list`).")] = "paused by hand",
    as_json: JsonOption = False,
) -> None:
    """Stop firing the job until it is resumed."""
    _state(name, pause=reason, as_json=as_json)


@app.command("resume")
def resume(name: str, as_json: JsonOption = False) -> None:
    """Fire the job again from its next slot (slots missed while paused do not fire)."""
    _state(name, pause=None, as_json=as_json)


@app.command("remove")
def remove(name: str) -> None:
    """Delete the job's definition (its runs stay)."""
    settings = load_settings()
    path = defs.remove(settings.jobs_dir, name)

    async def go() -> None:
        async with opened(settings) as store:
            await store.jobs.forget(name)

    run_async(go())
    err.print(f"job {name} removed ({path})")


@templates_app.command("list")
def list_templates(as_json: JsonOption = False) -> None:
    """Shipped templates and those in $TELECODER_HOME/templates."""
    settings = load_settings()
    found = templates.all_templates(settings.templates_dir)
    rows: list[dict[str, Any]] = [
        t.to_dict() if isinstance(t, templates.Template) else {"error": t.message} for t in found
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "vars", "description", "source")
    for row in rows:
        if "error" in row:
            table.add_row("-", "", escape(row["error"]), "")
            continue
        names = [k + ("" if v.get("required") else "?") for k, v in row["vars"].items()]
        source = "shipped" if row["builtin"] else "yours"
        table.add_row(row["name"], " ".join(names), escape(short(row["description"], 60)), source)
    out.print(table)


@templates_app.command("show")
def show_template(name: str, as_json: JsonOption = False) -> None:
    """One template: its prompt and variables."""
    settings = load_settings()
    row = templates.load(settings.templates_dir, name).to_dict()
    if as_json:
        print_json(row)
        return
    out.print(f"{row['name']}: {escape(row['description'])}")
    for key, var in row["vars"].items():
        out.print(f"  {key}: {escape(str(var))}")
    out.print(escape(row["prompt"]), highlight=False)
