"""``telecoder orch``: a leader's tasks over TeleCoder's runs (``telecoder.orch``).

Every command takes ``--json`` (stable shapes: a task is ``Task.to_dict``, an event
``TaskEvent.to_dict``); errors exit 2 (bad input: a dirty checkout in a strict run), 3 (no such
run or task), 4 (the task's state forbids it), 10 (``wait`` timed out).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from telecoder import orch, registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json, short
from telecoder.domain import Task, TaskEvent
from telecoder.errors import TeleCoderError
from telecoder.store import Store

T = TypeVar("T")

app = typer.Typer(
    help="Orchestration: a leader's tasks, dependencies and attempts in an orch run; each "
    "dispatched task is an ordinary session.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
run_app = typer.Typer(help="Orch runs.", no_args_is_help=True, rich_markup_mode=None)
task_app = typer.Typer(help="A run's tasks.", no_args_is_help=True, rich_markup_mode=None)
dep_app = typer.Typer(
    help="Dependencies between tasks.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(run_app, name="run")
app.add_typer(task_app, name="task")
app.add_typer(dep_app, name="dep")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RunArg = Annotated[str, typer.Argument(help="The orch run's id (run_…).")]
TaskArg = Annotated[str, typer.Argument(help="The task's key.")]


def _instructed(engine: str) -> bool:
    try:
        return bool(getattr(registry.create("engines", engine), "instructed", True))
    except TeleCoderError:  # no such engine: intake refuses it by name
        return True


def _with_context(work: Callable[[orch.Context], Awaitable[T]]) -> T:
    settings = load_settings()

    async def go() -> T:
        async with opened(settings) as store:
            ctx = orch.Context(
                store=store,
                settings=settings,
                workspace=build_workspace(settings),
                engines=registry.names("engines"),
                forges=build_forges(settings),
                instructed=_instructed,
            )
            return await work(ctx)

    return run_async(go())


def _with_store(work: Callable[[Store], Awaitable[T]]) -> T:
    return _with_context(lambda ctx: work(ctx.store))


# --- run, task, dep ---------------------------------------------------------------------------


@run_app.command("init")
def run_init(
    name: Annotated[str | None, typer.Option("--name", help="A name for the run.")] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", help="The tasks' repository unless they name one.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict/--no-strict",
            help="Code tasks start from a pinned commit; a dirty checkout without --base is "
            "refused.",
        ),
    ] = True,
    leader: Annotated[
        str | None,
        typer.Option("--as", envvar="TELECODER_AGENT", help="The leader's name (default: leader)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an orch run (prints its id)."""
    run = _with_store(
        lambda store: orch.init_run(store, name=name, repo=repo, strict=strict, leader=leader)
    )
    if as_json:
        print_json(run.to_dict())
    else:
        out.print(run.id)


@task_app.command("add")
def task_add(
    run_id: RunArg,
    key: TaskArg,
    prompt: Annotated[str, typer.Option("--prompt", help="What the task's agent is to do.")],
    repo: Annotated[str | None, typer.Option("--repo", help="Default: the run's.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Agent to run.")] = None,
    acceptance: Annotated[
        str | None, typer.Option("--acceptance", help="When the task is done.")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Start from this ref (default: the pinned HEAD).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="code or answer.")] = "code",
    assignee: Annotated[
        str | None,
        typer.Option("--assignee", help="Who gets its messages (default: session:<id>)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a task to an orch run."""
    task = _with_context(
        lambda ctx: orch.add_task(
            ctx,
            run_id,
            key,
            prompt=prompt,
            repo=repo,
            engine=engine,
            acceptance=acceptance,
            base=base,
            mode=mode,
            assignee=assignee,
        )
    )
    _task_out(task, as_json)


@dep_app.command("add")
def dep_add(
    run_id: RunArg,
    key: TaskArg,
    on: Annotated[str, typer.Option("--on", help="The task it waits for.")],
    as_json: JsonOption = False,
) -> None:
    """TASK waits for --on to succeed (a cycle is refused, naming it)."""
    task = _with_store(lambda store: store.orch.add_dependency(run_id, key, on))
    _task_out(task, as_json)


# --- reading ----------------------------------------------------------------------------------


@app.command("ready")
def ready(run_id: RunArg, as_json: JsonOption = False) -> None:
    """The tasks ready to dispatch (every dependency succeeded)."""
    tasks = _with_store(lambda store: orch.ready(store, run_id))
    if as_json:
        print_json([t.to_dict() for t in tasks])
        return
    for task in tasks:
        out.print(f"{escape(task.key)}\t{escape(short(task.prompt, 80))}")


@app.command("status")
def status(run_id: RunArg, as_json: JsonOption = False) -> None:
    """The run's tasks, their states and attempts."""
    data = _with_store(lambda store: orch.status(store, run_id))
    if as_json:
        print_json(data)
        return
    run = data["run"]
    counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items()) or "no tasks"
    out.print(escape(f"{run['id']} · {run['status']} · leader {data['leader']} · {counts}"))
    table = Table("TASK", "STATUS", "AFTER", "ATTEMPT", "SESSION", "BRANCH", "WORKTREE", box=None)
    for task in data["tasks"]:
        last = task["attempts"][-1] if task["attempts"] else {}
        table.add_row(
            escape(task["key"]),
            task["status"],
            escape(", ".join(task["depends_on"])),
            str(task["attempt"] or ""),
            task["session_id"] or "",
            escape(last.get("branch") or ""),
            escape(last.get("worktree") or ""),
        )
    out.print(table)


@app.command("blocked")
def blocked(run_id: RunArg, as_json: JsonOption = False) -> None:
    """The tasks waiting on the leader: an open question in their thread, or a session
    blocked asking one."""
    found = _with_store(lambda store: orch.blocked(store, run_id))
    if as_json:
        print_json(found)
        return
    for item in found:
        out.print(escape(f"{item['task']} ({item['via']}, {item['from']}): {item['question']}"))


@app.command("wait")
def wait(
    run_id: RunArg,
    after: Annotated[
        int | None,
        typer.Option("--after", help="The last event id seen (default: the newest now)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait (exit 10).")] = 60,
    as_json: JsonOption = False,
) -> None:
    """Block until a new task event (reconciling meanwhile); print the events and the cursor
    to continue from (--after)."""
    events, cursor = _with_store(
        lambda store: orch.wait(store, run_id, after=after, seconds=timeout)
    )
    if as_json:
        print_json({"events": [e.to_dict() for e in events], "cursor": cursor})
        return
    for event in events:
        out.print(_event_line(event))
    out.print(f"cursor: {cursor}")


# --- the leader's moves -----------------------------------------------------------------------


@app.command("dispatch")
def dispatch(
    run_id: RunArg,
    key: Annotated[str | None, typer.Argument(help="One task (default: every ready one).")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Start the named task from this ref.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make the ready tasks (or the one named) sessions in the run; each gets a message in its
    thread naming its worktree, branch and base."""
    done = _with_context(lambda ctx: orch.dispatch(ctx, run_id, key, base=base))
    for item in done:
        for warning in item.warnings:
            err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)
    if as_json:
        print_json([d.to_dict() for d in done])
        return
    if not done:
        out.print("nothing is ready")
    for item in done:
        last = item.task.attempts[-1]
        out.print(
            escape(f"{item.task.key} → session {last.session_id} · {last.branch} · {last.worktree}")
        )


@app.command("reconcile")
def reconcile(run_id: RunArg, as_json: JsonOption = False) -> None:
    """Reflect the sessions' states into the tasks; dependants become ready."""
    events = _with_store(lambda store: orch.reconcile(store, run_id))
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    for event in events:
        out.print(_event_line(event))


@app.command("answer")
def answer(
    run_id: RunArg,
    key: TaskArg,
    body: Annotated[str, typer.Option("--body", help="The answer.")],
    as_json: JsonOption = False,
) -> None:
    """Answer the task's open question (its blocked session resumes with the answer)."""
    result = _with_store(lambda store: orch.answer(store, run_id, key, body))
    if as_json:
        print_json(result)
        return
    said = f"answered {key}"
    if result["reply_id"] is not None:
        said += f" (message {result['reply_id']} to question {result['message_id']})"
    if result["resumed"]:
        said += f"; session {result['resumed']} resumes"
    out.print(escape(said))


@app.command("retry")
def retry(run_id: RunArg, key: TaskArg, as_json: JsonOption = False) -> None:
    """A failed or cancelled task again: a new attempt, a new session."""
    done = _with_context(lambda ctx: orch.retry(ctx, run_id, key))
    _moved(done, as_json)


@app.command("reassign")
def reassign(
    run_id: RunArg,
    key: TaskArg,
    to: Annotated[str, typer.Option("--to", help="The agent to take it.")],
    engine: Annotated[str | None, typer.Option("--engine", help="And this engine.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Give the task to another agent (in flight: its session is cancelled, a new attempt
    dispatched to them)."""
    done = _with_context(lambda ctx: orch.reassign(ctx, run_id, key, to=to, engine=engine))
    _moved(done, as_json)


@app.command("cancel")
def cancel(
    run_id: RunArg,
    key: Annotated[str | None, typer.Argument(help="One task (default: all).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a task (or every task that has not ended) and its session."""
    tasks = _with_store(lambda store: orch.cancel(store, run_id, key))
    if as_json:
        print_json([t.to_dict() for t in tasks])
        return
    for task in tasks:
        out.print(escape(f"{task.key} {task.status.value}"))


@app.command("cleanup")
def cleanup(run_id: RunArg, as_json: JsonOption = False) -> None:
    """Remove the worktrees of the run's finished tasks (TeleCoder's own only); print them."""
    removed = _with_context(lambda ctx: orch.cleanup(ctx, run_id))
    if as_json:
        print_json({"removed": removed})
        return
    for item in removed:
        out.print(escape(f"removed {item['worktree']} ({item['task']}, attempt {item['attempt']})"))
    if not removed:
        out.print("nothing to remove")


# --- printing ---------------------------------------------------------------------------------


def _task_out(task: Task, as_json: bool) -> None:
    if as_json:
        print_json(task.to_dict())
    else:
        after = f" after {', '.join(task.depends_on)}" if task.depends_on else ""
        out.print(escape(f"{task.key} {task.status.value}{after}"))


def _moved(done: orch.Dispatched | Task, as_json: bool) -> None:
    """A retried or reassigned task (dispatched again, or not): one JSON shape either way."""
    if isinstance(done, Task):
        done = orch.Dispatched(task=done, warnings=[])
    for warning in done.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)
    if as_json:
        print_json(done.to_dict())
    else:
        _task_out(done.task, as_json)


def _event_line(event: TaskEvent) -> str:
    data: dict[str, Any] = dict(event.data)
    status = data.pop("status", None)
    rest = " ".join(f"{k}={v}" for k, v in data.items() if v is not None)
    head = f"{event.id} {event.task} {event.kind}" + (f" {status}" if status else "")
    return escape(f"{head} {rest}".rstrip())
