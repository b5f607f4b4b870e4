"""``telecoder goals``: goals planned by a model, approved (or edited) into runs.

Locally they read and write the database and call the planner (``TELECODER_PLANNER_MODEL``)
from this process; with ``--server`` a TeleCoder server does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from telecoder import goals, registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import Exit, err, out, print_json
from telecoder.errors import BadInput
from telecoder.gitcmd import is_url
from telecoder.intake import Accepted, Request, accept
from telecoder.planner import Plan, load_plan, planner_of
from telecoder.settings import Settings

app = typer.Typer(
    help="Goals: a goal in plain words, planned by a model into tasks, approved into a run.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
GoalArg = Annotated[str, typer.Argument(help="The goal's id (goal_…).")]


def _remote(server: str, call: str, *args: Any) -> dict[str, Any]:
    from telecoder.cli.remote import connect

    async def go() -> dict[str, Any]:
        async with connect(server) as api:
            found: dict[str, Any] = await getattr(api, call)(*args)
            return found

    return run_async(go())


@app.command("add")
def add(
    text: Annotated[str, typer.Argument(help="The goal, in plain words.")],
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            help="Its repository: a registered name, a URL, owner/name or a path; tasks that "
            "name none run there.",
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Add a goal and have the planner decompose it (exit 1 when no plan could be made)."""
    if server:
        goal = _remote(server, "add_goal", {"text": text, "repo": _as_sent(repo)})
    else:
        settings = load_settings()

        async def go() -> dict[str, Any]:
            async with opened(settings) as store:
                made = await goals.add(store, planner_of(settings), text, repo=repo)
            return made.to_dict()

        goal = run_async(go())
    _show(goal, as_json)
    if goal["status"] == "failed":
        raise typer.Exit(Exit.TASK_FAILED)


@app.command("list")
def list_goals(as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Goals, newest first."""
    if server:
        found = _remote(server, "goals")["goals"]
    else:
        settings = load_settings()

        async def go() -> list[dict[str, Any]]:
            async with opened(settings) as store:
                return [g.to_dict() for g in await store.goals.list(limit=200)]

        found = run_async(go())
    if as_json:
        print_json({"goals": found})
        return
    if not found:
        err.print('no goals: telecoder goals add "…"')
        return
    table = Table("ID", "STATUS", "TASKS", "RUN", "GOAL", box=None, header_style="bold")
    for goal in found:
        tasks = len((goal["plan"] or {}).get("tasks", []))
        table.add_row(
            goal["id"], goal["status"], str(tasks), goal["run_id"] or "", escape(goal["text"][:60])
        )
    out.print(table)


@app.command("show")
def show(goal_id: GoalArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """A goal, its plan and its run (exit 3 when there is none of that id)."""
    if server:
        goal = _remote(server, "goal", goal_id)
    else:
        settings = load_settings()

        async def go() -> dict[str, Any]:
            async with opened(settings) as store:
                return (await store.goals.get(goal_id)).to_dict()

        goal = run_async(go())
    _show(goal, as_json)


@app.command("approve")
def approve(
    goal_id: GoalArg,
    edit: Annotated[
        Path | None,
        typer.Option(
            "--edit",
            help="Run this plan (YAML: tasks: [{id, prompt, repo, depends_on, acceptance}]) "
            "instead of the goal's own.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Approve the goal's plan (or an edited one): it becomes a run (exit 4 when the goal is
    not waiting for approval, 2 when a task is refused)."""
    edited = load_plan(_read(edit)) if edit is not None else None
    if server:
        plan = edited.to_dict() if edited is not None else None
        goal = _remote(server, "approve_goal", goal_id, plan)
    else:
        goal = run_async(_approve_here(load_settings(), goal_id, edited))
    _show(goal, as_json)


async def _approve_here(settings: Settings, goal_id: str, edited: Plan | None) -> dict[str, Any]:
    workspace, forges = build_workspace(settings), build_forges(settings)

    async def intake(request: Request) -> Accepted:
        engines = registry.names("engines")
        return await accept(
            request, settings=settings, workspace=workspace, engines=engines, forges=forges
        )

    async with opened(settings) as store:
        goal, _ = await goals.approve(store, intake, goal_id, edited)
    return goal.to_dict()


@app.command("drop")
def drop(goal_id: GoalArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Drop a goal that has no run (exit 4 for one that runs: cancel its run instead)."""
    if server:
        goal = _remote(server, "drop_goal", goal_id)
    else:
        settings = load_settings()

        async def go() -> dict[str, Any]:
            async with opened(settings) as store:
                return (await store.goals.drop(goal_id)).to_dict()

        goal = run_async(go())
    _show(goal, as_json)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e}") from None


def _as_sent(repo: str | None) -> str | None:
    """A local path that exists here made absolute; a registered name, a URL or ``owner/name``
    as given."""
    if repo is None or is_url(repo):
        return repo
    path = Path(repo).expanduser()
    return str(path.resolve()) if path.exists() else repo


def _show(goal: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(goal)
        return
    out.print(f"{goal['id']}  {goal['status']}  {escape(goal['text'][:80])}")
    if goal.get("error"):
        err.print(f"[yellow]{escape(goal['error'])}[/]")
    for task in (goal.get("plan") or {}).get("tasks", []):
        after = f"  after {', '.join(task['depends_on'])}" if task.get("depends_on") else ""
        where = task.get("repo") or goal.get("repo") or "?"
        out.print(
            f"  {escape(task['id'])}  ({escape(where)}){after}: {escape(task['prompt'][:100])}"
        )
    if goal.get("run_id"):
        out.print(f"run {goal['run_id']} ({goal.get('run_status')})")
    elif goal["status"] == "proposed":
        out.print(f"approve it: telecoder goals approve {goal['id']}")
