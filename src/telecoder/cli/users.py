"""``telecoder users``, ``telecoder tokens`` and ``telecoder audit``: who may use the server,
with which role, and what they did. They work on the local store (the admin's machine), like
``repos``; every change is written to the audit log with the source ``cli``.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json

if TYPE_CHECKING:
    from telecoder.store import Store

T = TypeVar("T")

users_app = typer.Typer(
    help="Users and their roles: admin (everything), member (their own sessions), viewer "
    "(reads only).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
tokens_app = typer.Typer(
    help="API tokens of users (and of remote workers): create, list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NameArg = Annotated[str, typer.Argument(help="The user's name (letters, digits, - and _).")]
RoleArg = Annotated[str, typer.Argument(help="admin, member or viewer.")]


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _with_store(work: Callable[[Store], Awaitable[T]]) -> T:
    settings = load_settings()

    async def go() -> T:
        async with opened(settings) as store:
            return await work(store)

    return run_async(go())


async def _audit(store: Store, action: str, target: str, **detail: Any) -> None:
    await store.audit.record(
        actor=_actor(), role="admin", action=action, target=target, detail=detail, source="cli"
    )


# --- users ---------------------------------------------------------------------------------


@users_app.command("add")
def add_user(
    name: NameArg,
    role: Annotated[str, typer.Option("--role", help="admin, member or viewer.")] = "member",
    as_json: JsonOption = False,
) -> None:
    """Add a user (exit 2 for a bad name or role, 5 when the name is taken)."""

    async def work(store: Store) -> dict[str, Any]:
        user = await store.users.add(name, role)
        await _audit(store, "users add", name, role=role)
        return user.to_dict()

    added = _with_store(work)
    if as_json:
        print_json(added)
    else:
        out.print(f"added {escape(name)} ({role}): `telecoder tokens create --user {name}`")


@users_app.command("list")
def list_users(as_json: JsonOption = False) -> None:
    """The users, by name."""

    async def work(store: Store) -> list[dict[str, Any]]:
        return [u.to_dict() for u in await store.users.list()]

    found = _with_store(work)
    if as_json:
        print_json(found)
        return
    if not found:
        err.print("no users: telecoder users add NAME --role member")
        return
    table = Table("NAME", "ROLE", "CREATED", "DISABLED", box=None, header_style="bold")
    for u in found:
        table.add_row(escape(u["name"]), u["role"], _when(u["created_at"]), "yes" * u["disabled"])
    out.print(table)


@users_app.command("set-role")
def set_role(name: NameArg, role: RoleArg) -> None:
    """Change a user's role (exit 3 when there is no such user)."""

    async def work(store: Store) -> None:
        await store.users.set_role(name, role)
        await _audit(store, "users set-role", name, role=role)

    _with_store(work)
    out.print(f"{escape(name)} is now {role}")


@users_app.command("disable")
def disable(name: NameArg) -> None:
    """Disable a user: their tokens and dashboard logins stop working at once."""

    async def work(store: Store) -> None:
        await store.users.disable(name)
        await _audit(store, "users disable", name)

    _with_store(work)
    out.print(f"disabled {escape(name)}")


# --- tokens --------------------------------------------------------------------------------


@tokens_app.command("create")
def create_token(
    user: Annotated[str | None, typer.Option("--user", help="The user the token acts for.")] = None,
    role: Annotated[
        str | None,
        typer.Option("--role", help="worker: a remote worker's token (worker endpoints only)."),
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note: where it is used.")] = None,
) -> None:
    """Make a token; it is printed once, alone on the last line (only its digest is kept)."""

    async def work(store: Store) -> tuple[int, str]:
        row, token = await store.users.create_token(user, role=role, label=label)
        await _audit(store, "tokens create", f"token {row.id}", user=user, role=role, label=label)
        return row.id, token

    token_id, token = _with_store(work)
    who = f"for {escape(user)}" if user else "for a worker"
    out.print(f"token {token_id} {who}{f' ({role})' if role else ''}: shown once, keep it now")
    sys.stdout.write(token + "\n")  # the last line, alone: `… | tail -1`
    sys.stdout.flush()


@tokens_app.command("list")
def list_tokens(as_json: JsonOption = False) -> None:
    """The tokens: id, user, role, label, the worker a worker token is bound to, when made and
    last used, revoked (never the token)."""

    async def work(store: Store) -> list[dict[str, Any]]:
        return [t.to_dict() for t in await store.users.tokens()]

    found = _with_store(work)
    if as_json:
        print_json(found)
        return
    if not found:
        err.print("no tokens: telecoder tokens create --user NAME")
        return
    table = Table(
        "ID",
        "USER",
        "ROLE",
        "LABEL",
        "WORKER",
        "CREATED",
        "LAST USED",
        "REVOKED",
        box=None,
        header_style="bold",
    )
    for t in found:
        table.add_row(
            str(t["id"]),
            escape(t["user"] or ""),
            t["role"] or "",
            escape(t["label"] or ""),
            escape(t["worker_id"] or ""),
            _when(t["created_at"]),
            _when(t["last_used_at"]),
            _when(t["revoked_at"]),
        )
    out.print(table)


@tokens_app.command("revoke")
def revoke(token_id: Annotated[int, typer.Argument(help="The token's id (tokens list).")]) -> None:
    """Revoke a token: it is refused (401) from now on, its dashboard logins too."""

    async def work(store: Store) -> None:
        await store.users.revoke(token_id)
        await _audit(store, "tokens revoke", f"token {token_id}")

    _with_store(work)
    out.print(f"revoked token {token_id}")


# --- audit ---------------------------------------------------------------------------------


def audit(
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor's rows.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="From this time on: 30m, 24h, 7d, a date or a time.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1, max=1000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """The audit log, newest first: who changed what, when and from where."""
    from telecoder.timerange import parse_time

    start = parse_time(since) if since else None

    async def work(store: Store) -> list[dict[str, Any]]:
        return [r.to_dict() for r in await store.audit.list(actor=actor, since=start, limit=limit)]

    found = _with_store(work)
    if as_json:
        print_json(found)
        return
    if not found:
        err.print("nothing in the audit log")
        return
    table = Table("WHEN", "WHO", "ROLE", "WHAT", "TARGET", "FROM", box=None, header_style="bold")
    for r in found:
        table.add_row(
            _when(r["ts"]),
            escape(r["actor"]),
            r["role"],
            escape(r["action"]),
            escape(r["target"]),
            escape(r["source"]),
        )
    out.print(table)
