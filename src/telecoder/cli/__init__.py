"""The ``telecoder`` command line (Typer + Rich).

Each command builds ``Settings`` once, opens the store, and translates errors into one line on
stderr — with ``--json``, one ``{"error": {"code", "message"}}`` object on stdout — and a stable
exit code (see ``output.Exit``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any, NoReturn

import typer
import typer.main
from typer._click.utils import make_default_short_help
from typer.models import CommandInfo, TyperInfo

from telecoder.cli.exits import Exit, print_json_line
from telecoder.cli.lazy import lean
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
    UserNotFound,
    WorkerNotFound,
)

# Every command, in the order `telecoder --help` lists them: the module (under telecoder.cli)
# and attribute that define it (a function: a command; a Typer: a group of commands) and its
# summary for the list. A command's module is imported only when that command runs (or its own
# help is asked for), so `telecoder run --detach` does not pay for the server, the gateway or
# best-of-N (test_cli_imports.py checks the summaries match the commands' own help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run", "run", "Run a task on a repository: a pushed branch (and PR) or an answer."),
    "send": (
        "chat",
        "send",
        "Send a chat session a message: its agent resumes in the same worktree.",
    ),
    "answer": (
        "chat",
        "answer",
        "Answer a blocked session's question: its agent resumes with it in the same worktree.",
    ),
    "list": ("sessions", "list_sessions", "List sessions, newest first."),
    "show": (
        "sessions",
        "show",
        "Show one session: status, result, error, and each attempt (crashed or stopped).",
    ),
    "logs": (
        "sessions",
        "logs",
        "Print a session's events (or, with --raw, its agent's raw output).",
    ),
    "cancel": (
        "sessions",
        "cancel",
        "Cancel a session: at once if queued; a running one stops within a heartbeat.",
    ),
    "retry": (
        "sessions",
        "retry",
        "Run a finished session again: a new session, on the same branch and pull request.",
    ),
    "worker": ("worker", "worker", "Run queued sessions."),
    "workers": (
        "workers",
        "workers_app",
        "List workers: host, pid, slots, engines, state (idle/working/draining/offline); "
        "drain or resume one.",
    ),
    "pause": (
        "control",
        "pause",
        "Pause all claiming on every host: running sessions finish, queued ones wait.",
    ),
    "resume": (
        "control",
        "resume",
        "Resume claiming after `telecoder pause`: workers take queued sessions again.",
    ),
    "engines": (
        "engines",
        "engines",
        "List the engines: CLI installed and its version, endpoint/key variables set.",
    ),
    "costs": (
        "costs",
        "costs",
        "What model requests cost (metered by the gateway): totals, groups, top sessions.",
    ),
    "serve": ("serve", "serve", "Serve the HTTP API and the dashboard, with embedded workers."),
    "wait": (
        "wait",
        "wait",
        "Wait for sessions to end: exit 0 if all succeeded, else the failure's exit code.",
    ),
    "version": ("sessions", "version", "Print TeleCoder's version."),
    "budget": (
        "budgets",
        "budget",
        "Raise a session's budget: one waiting blocked on it resumes where its agent stopped.",
    ),
    "db": ("db", "app", "Manage the database."),
    "mcp": (
        "mcp_stdio",
        "mcp",
        "Serve TeleCoder's MCP tools on stdio (submit, wait, follow, cancel, list sessions).",
    ),
    "hooks": ("hooks", "hooks_app", "Inbound webhooks: POST /api/hooks/NAME starts a session."),
    "subscriptions": (
        "hooks",
        "subscriptions_app",
        "Signed HTTP notifications when sessions finish, fail or need input.",
    ),
    "endpoints": (
        "endpoints",
        "app",
        "Model endpoints the gateway forwards to: add, list, check, remove.",
    ),
    "budgets": (
        "budgets",
        "app",
        "Period budgets: what all sessions (or one user's) may cost per day or month.",
    ),
    "best-of": ("bestof", "app", "Best-of-N runs: their candidates, the verdict, a person's pick."),
    "repos": (
        "repos",
        "app",
        "Registered repositories (what `app: fix …` in a channel names) and the channels'"
        " default repositories (routes).",
    ),
    "goals": (
        "goals",
        "app",
        "Goals: a goal in plain words, planned by a model into tasks, approved into a run.",
    ),
    "runs": (
        "runs",
        "app",
        "Runs: sessions that belong together (a fan-out, a plan's task graph, a job's firing).",
    ),
    "jobs": (
        "jobs",
        "app",
        "Cron jobs: tasks fired on a schedule by `telecoder serve` and workers.",
    ),
    "templates": ("jobs", "templates_app", "Named prompts with variables."),
    "inbox": (
        "inbox",
        "app",
        "The inbox: durable messages between agents (claims with leases, replies, waits).",
    ),
    "memory": (
        "memory",
        "app",
        "Memories: what finished sessions taught about each repository (given to the next"
        " session's agent), and users' facts.",
    ),
    "orch": (
        "orch",
        "app",
        "Orchestration: a leader's tasks, dependencies and attempts in an orch run; each "
        "dispatched task is an ordinary session.",
    ),
    "council": (
        "council",
        "app",
        "A council of reviewers: one target, several reviewers, their recommendations tallied.",
    ),
    "cache": (
        "cache",
        "app",
        "The setup cache: what .telecoder.yml setup commands made, kept per key.",
    ),
    "setup": (
        "setup",
        "setup",
        "Set TeleCoder up: GitHub token, model key, engine, channels, port, into config.env.",
    ),
    "status": (
        "status",
        "status",
        "Show the server, workers, queue depth, sandbox, endpoints and recent failures.",
    ),
    "service": (
        "service",
        "app",
        "Run TeleCoder as a systemd service: install (hardened unit), status, uninstall.",
    ),
    "config": (
        "config",
        "app",
        "Settings kept in $TELECODER_HOME/config.env: list, get, set, unset (secrets masked).",
    ),
    "users": (
        "users",
        "users_app",
        "Users and their roles: admin (everything), member (their own sessions), viewer "
        "(reads only).",
    ),
    "tokens": (
        "users",
        "tokens_app",
        "API tokens of users (and of remote workers): create, list, revoke.",
    ),
    "audit": (
        "users",
        "audit",
        "The audit log, newest first: who changed what, when and from where.",
    ),
}


class LazyGroup(typer.core.TyperGroup):
    """The top-level group: builds a command from its module the first time it is asked for."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        lean(self)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # The summaries, without importing every command's module.
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, make_default_short_help(summary, limit))
            for name, (_, _, summary) in COMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def load(name: str) -> Any:
    """The click command ``telecoder NAME`` runs, built from its module."""
    module, attribute, _ = COMMANDS[name]
    found = getattr(importlib.import_module(f"telecoder.cli.{module}"), attribute)
    if isinstance(found, typer.Typer):
        return lean(
            typer.main.get_group_from_info(
                TyperInfo(found, name=name),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=None,
                suggest_commands=app.suggest_commands,
            )
        )
    return lean(
        typer.main.get_command_from_info(
            CommandInfo(name=name, callback=found),
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=None,
        )
    )


app = typer.Typer(
    name="telecoder",
    help="Send a task, get a pull request — or an answer. Runs coding agents in the background.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Send a task, get a pull request — or an answer. Runs coding agents in the background."""


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
    (UserNotFound, Exit.NOT_FOUND),
    (WorkerNotFound, Exit.NOT_FOUND),
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
        report(e, as_json=as_json)
    except typer.TyperException as e:  # with --json only: a usage error (missing option, bad int)
        code = Exit.BAD_INPUT if e.exit_code == Exit.BAD_INPUT else Exit.TASK_FAILED
        _fail(code, _usage_message(e), as_json=True)
    except (KeyboardInterrupt, typer.Abort):
        _fail(Exit.INTERRUPTED, "interrupted", as_json=as_json, quiet=True)
    except Exception as e:
        # The database's errors, without importing SQLAlchemy in commands that never open it.
        found = sys.modules.get("sqlalchemy.exc")
        if found is None or not isinstance(e, found.DBAPIError):
            raise
        _fail(Exit.UNAVAILABLE, f"the database failed: {e.orig}", as_json=as_json)


def report(e: TeleCoderError, *, as_json: bool) -> NoReturn:
    """Report ``e`` and exit with its stable code (also for launch.py's quick submit)."""
    code = next((c for kind, c in _EXIT if isinstance(e, kind)), Exit.TASK_FAILED)
    _fail(code, e.message, as_json=as_json)


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
        from rich.markup import escape

        from telecoder.cli.output import err

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
