"""The ``telecoder`` command line (Typer + Rich).

Each command builds ``Settings`` once, opens the store, and translates errors into one line on
stderr and a stable exit code (see ``output.Exit``).
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from sqlalchemy.exc import DBAPIError

from telecoder.cli import (
    bestof,
    budgets,
    chat,
    costs,
    council,
    db,
    endpoints,
    engines,
    goals,
    hooks,
    jobs,
    orch,
    repos,
    run,
    runs,
    serve,
    sessions,
    worker,
    workers,
)
from telecoder.cli.output import Exit, err
from telecoder.errors import (
    BadInput,
    Conflict,
    EndpointNotFound,
    GoalNotFound,
    HookNotFound,
    JobNotFound,
    RegisteredRepoNotFound,
    ServerUnavailable,
    SessionNotFound,
    StoreUnavailable,
    SubscriptionNotFound,
    TeleCoderError,
    TemplateNotFound,
    TimedOut,
    Unauthorized,
)

app = typer.Typer(
    name="telecoder",
    help="Send a task, get a pull request — or an answer. Runs coding agents in the background.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("run")(run.run)
app.command("send")(chat.send)
app.command("answer")(chat.answer)
app.command("list")(sessions.list_sessions)
app.command("show")(sessions.show)
app.command("logs")(sessions.logs)
app.command("cancel")(sessions.cancel)
app.command("retry")(sessions.retry)
app.command("worker")(worker.worker)
app.command("workers")(workers.workers)
app.command("engines")(engines.engines)
app.command("costs")(costs.costs)
app.command("serve")(serve.serve)
app.command("version")(sessions.version)
app.command("budget")(budgets.budget)
app.add_typer(db.app, name="db")
app.add_typer(hooks.hooks_app, name="hooks")
app.add_typer(hooks.subscriptions_app, name="subscriptions")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(budgets.app, name="budgets")
app.add_typer(bestof.app, name="best-of")
app.add_typer(repos.app, name="repos")
app.add_typer(goals.app, name="goals")
app.add_typer(runs.app, name="runs")
app.add_typer(jobs.app, name="jobs")
app.add_typer(jobs.templates_app, name="templates")
app.add_typer(orch.app, name="orch")
app.add_typer(council.app, name="council")

_EXIT: list[tuple[type[TeleCoderError], Exit]] = [
    (BadInput, Exit.BAD_INPUT),
    (SessionNotFound, Exit.NOT_FOUND),
    (HookNotFound, Exit.NOT_FOUND),
    (JobNotFound, Exit.NOT_FOUND),
    (TemplateNotFound, Exit.NOT_FOUND),
    (SubscriptionNotFound, Exit.NOT_FOUND),
    (RegisteredRepoNotFound, Exit.NOT_FOUND),
    (GoalNotFound, Exit.NOT_FOUND),
    (EndpointNotFound, Exit.NOT_FOUND),
    (Conflict, Exit.CONFLICT),
    (StoreUnavailable, Exit.UNAVAILABLE),
    (ServerUnavailable, Exit.UNAVAILABLE),
    (Unauthorized, Exit.UNAUTHORIZED),
    (TimedOut, Exit.TIMED_OUT),
]


def main() -> None:
    # Whatever TeleCoder creates (its home, the database, logs, mirrors, worktrees, engine homes)
    # is for this user alone; git and SQLite create files through the umask too.
    os.umask(0o077)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _check_argv(sys.argv[1:])
        app()
    except TeleCoderError as e:
        code = next((c for kind, c in _EXIT if isinstance(e, kind)), Exit.TASK_FAILED)
        err.print(f"[red]error:[/] {e.message}", markup=True, highlight=False)
        sys.exit(code)
    except DBAPIError as e:
        err.print(f"[red]error:[/] the database failed: {e.orig}")
        sys.exit(Exit.UNAVAILABLE)
    except KeyboardInterrupt:
        sys.exit(Exit.INTERRUPTED)


def _check_argv(args: list[str]) -> None:
    """Refuse arguments that are not UTF-8 (Python keeps their bytes as lone surrogates, which
    no database, URL or JSON body can hold)."""
    for number, arg in enumerate(args, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise BadInput(f"argument {number} is not valid UTF-8: {raw}") from None
