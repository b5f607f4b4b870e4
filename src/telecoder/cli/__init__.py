"""The ``telecoder`` command line (Typer + Rich).

Each command builds ``Settings`` once, opens the store, and translates errors into one line on
stderr — with ``--json``, one ``{"error": {"code", "message"}}`` object on stdout — and a stable
exit code (see ``output.Exit``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import typer
from rich.markup import escape
from sqlalchemy.exc import DBAPIError

from telecoder.cli import (
    bestof,
    budgets,
    cache,
    chat,
    costs,
    council,
    db,
    endpoints,
    engines,
    goals,
    hooks,
    inbox,
    jobs,
    memory,
    orch,
    repos,
    run,
    runs,
    serve,
    sessions,
    worker,
    workers,
)
from telecoder.cli.output import Exit, err, print_json_line
from telecoder.errors import (
    BadInput,
    CacheEntryNotFound,
    Conflict,
    EndpointNotFound,
    GoalNotFound,
    HookNotFound,
    JobNotFound,
    LeaseLost,
    MemoryNotFound,
    MessageNotFound,
    RawLogNotFound,
    RegisteredRepoNotFound,
    ServerUnavailable,
    SessionNotFound,
    StoreUnavailable,
    SubscriptionNotFound,
    TeleCoderError,
    TemplateNotFound,
    TimedOut,
    Unauthorized,
    Unsupported,
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
app.add_typer(inbox.app, name="inbox")
app.add_typer(memory.app, name="memory")
app.add_typer(orch.app, name="orch")
app.add_typer(council.app, name="council")
app.add_typer(cache.app, name="cache")

_EXIT: list[tuple[type[TeleCoderError], Exit]] = [
    (BadInput, Exit.BAD_INPUT),
    (SessionNotFound, Exit.NOT_FOUND),
    (HookNotFound, Exit.NOT_FOUND),
    (CacheEntryNotFound, Exit.NOT_FOUND),
    (JobNotFound, Exit.NOT_FOUND),
    (TemplateNotFound, Exit.NOT_FOUND),
    (SubscriptionNotFound, Exit.NOT_FOUND),
    (RegisteredRepoNotFound, Exit.NOT_FOUND),
    (GoalNotFound, Exit.NOT_FOUND),
    (EndpointNotFound, Exit.NOT_FOUND),
    (MessageNotFound, Exit.NOT_FOUND),
    (MemoryNotFound, Exit.NOT_FOUND),
    (RawLogNotFound, Exit.NOT_FOUND),
    (LeaseLost, Exit.LEASE_LOST),
    (TimedOut, Exit.TIMED_OUT),
    (Conflict, Exit.CONFLICT),
    (StoreUnavailable, Exit.UNAVAILABLE),
    (ServerUnavailable, Exit.UNAVAILABLE),
    (Unauthorized, Exit.UNAUTHORIZED),
    (Unsupported, Exit.UNSUPPORTED),
]


def main() -> None:
    # Whatever TeleCoder creates (its home, the database, logs, mirrors, worktrees, engine homes)
    # is for this user alone; git and SQLite create files through the umask too.
    os.umask(0o077)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:]
    as_json = "--json" in args
    try:
        _check_argv(args)
        if not as_json:
            app()
        # Usage errors come back as exceptions, so that they too are answered in JSON.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else Exit.OK)
    except TeleCoderError as e:
        code = next((c for kind, c in _EXIT if isinstance(e, kind)), Exit.TASK_FAILED)
        _fail(code, e.message, as_json=as_json)
    except DBAPIError as e:
        _fail(Exit.UNAVAILABLE, f"the database failed: {e.orig}", as_json=as_json)
    except typer.TyperException as e:  # with --json only: a usage error (missing option, bad int)
        code = Exit.BAD_INPUT if e.exit_code == Exit.BAD_INPUT else Exit.TASK_FAILED
        _fail(code, _usage_message(e), as_json=True)
    except (KeyboardInterrupt, typer.Abort):
        _fail(Exit.INTERRUPTED, "interrupted", as_json=as_json, quiet=True)


ERROR_CODES: dict[Exit, str] = {
    Exit.TASK_FAILED: "failed",
    Exit.BAD_INPUT: "bad_input",
    Exit.NOT_FOUND: "not_found",
    Exit.CONFLICT: "conflict",
    Exit.UNAVAILABLE: "unavailable",
    Exit.UNAUTHORIZED: "unauthorized",
    Exit.UNSUPPORTED: "unsupported",
    Exit.LEASE_LOST: "lease_lost",
    Exit.TIMED_OUT: "timed_out",
    Exit.INTERRUPTED: "interrupted",
}


def _fail(code: Exit, message: str, *, as_json: bool, quiet: bool = False) -> NoReturn:
    """Report an error and exit with its code: with ``--json``, exactly one JSON object on
    stdout, ``{"error": {"code", "message"}}``; otherwise ``error: …`` on stderr."""
    if as_json:
        print_json_line({"error": {"code": ERROR_CODES[code], "message": message}})
    elif not quiet:
        err.print(f"[red]error:[/] {escape(message)}", markup=True, highlight=False)
    sys.exit(code)


def _usage_message(e: typer.TyperException) -> str:
    message = e.format_message()
    command = getattr(getattr(e, "ctx", None), "command_path", None)
    return f"{command}: {message}" if command else message


def _check_argv(args: list[str]) -> None:
    """Refuse arguments that are not UTF-8 (Python keeps their bytes as lone surrogates, which
    no database, URL or JSON body can hold)."""
    for number, arg in enumerate(args, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise BadInput(f"argument {number} is not valid UTF-8: {raw}") from None
