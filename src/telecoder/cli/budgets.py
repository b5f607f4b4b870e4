"""``telecoder budget``: raise a session's budget (and resume it); ``telecoder budgets``: the
period budgets (daily, monthly; global or per user)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from telecoder import amounts
from telecoder.assemble import build_worker
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import Exit, budgets_table, err, out, print_json
from telecoder.cli.run import execute_here
from telecoder.domain import SessionStatus
from telecoder.errors import BadInput
from telecoder.store.budgets import GLOBAL, defaults_of, scope_of

app = typer.Typer(
    help="Period budgets: what all sessions (or one user's) may cost per day or month.",
    no_args_is_help=True,
)

Period = Annotated[str, typer.Option("--period", help="daily or monthly (UTC).")]
User = Annotated[
    str | None,
    typer.Option("--user", help="Only this user's sessions (an API token's name); default all."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def budget(
    session_id: Annotated[str, typer.Argument(help="Session id (or a unique prefix).")],
    amount: Annotated[
        str, typer.Argument(help="+1.00 adds a dollar to the budget; 5.00 sets it to five.")
    ],
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Leave the resumed session to a worker.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the session as JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """Raise a session's budget: one waiting blocked on it resumes where its agent stopped."""
    change = amounts.budget_change(amount)
    if server:
        from telecoder.cli import remote

        body: dict[str, Any] = {"add": change.amount} if change.add else {"usd": change.amount}
        return remote.raise_budget(server, session_id=session_id, body=body, as_json=as_json)
    settings = load_settings()

    async def go() -> Exit:
        async with opened(settings) as store:
            session = await store.sessions.resolve(session_id)
            after = await store.events.last_seq(session.id)
            was = session.status
            session = await store.budgets.raise_session(session.id, change)
            resumed = was == SessionStatus.BLOCKED and session.status == SessionStatus.QUEUED
            if detach or not resumed:
                if as_json:
                    print_json(session.to_dict())
                else:
                    line = f"{session.id}: budget ${session.budget_usd:.2f}"
                    out.print(line + (" · resumed (queued)" if resumed else ""))
                return Exit.OK
            worker = build_worker(settings, store, one_shot=True)
            claimed = await store.queue.claim(worker.id, only=session.id)
            return await execute_here(
                store, worker, claimed, session.id, after=after, as_json=as_json
            )

    raise typer.Exit(run_async(go()))


def _scope(user: str | None) -> str:
    if user is not None and not user.strip():
        raise BadInput("the user is empty")
    return scope_of(user) if user else GLOBAL


@app.command("set")
def set_budget(
    period: Period,
    usd: Annotated[float, typer.Option("--usd", help="The limit in dollars.", min=0)],
    user: User = None,
    as_json: AsJson = False,
    server: ServerOption = None,
) -> None:
    """Set a period budget; at 100 %, new sessions wait until the period rolls over."""
    scope = _scope(user)
    if server:
        from telecoder.cli import remote

        body = {"period": period, "usd": usd, "user": user}
        return remote.put_budget(server, body=body, as_json=as_json)
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            await store.budgets.set(scope, period, usd)
        _print_list(await _status(settings), as_json)

    run_async(go())


@app.command("remove")
def remove_budget(
    period: Period,
    user: User = None,
    as_json: AsJson = False,
    server: ServerOption = None,
) -> None:
    """Remove a period budget (a settings default stays in force)."""
    scope = _scope(user)
    if server:
        from telecoder.cli import remote

        body = {"period": period, "usd": None, "user": user}
        return remote.put_budget(server, body=body, as_json=as_json)
    settings = load_settings()

    async def go() -> Exit:
        async with opened(settings) as store:
            removed = await store.budgets.remove(scope, period)
        if not removed:
            err.print(f"error: no {period} budget for {scope}")
            return Exit.NOT_FOUND
        _print_list(await _status(settings), as_json)
        return Exit.OK

    raise typer.Exit(run_async(go()))


@app.command("list")
def list_budgets(as_json: AsJson = False, server: ServerOption = None) -> None:
    """List the period budgets: limit, spent this period, alert level, whether new sessions
    wait."""
    if server:
        from telecoder.cli import remote

        return remote.list_budgets(server, as_json=as_json)
    settings = load_settings()
    _print_list(run_async(_status(settings)), as_json)


async def _status(settings: Any) -> list[dict[str, Any]]:
    async with opened(settings) as store:
        defaults = defaults_of(settings.budget_daily_usd, settings.budget_monthly_usd)
        return [b.to_dict() for b in await store.budgets.status(defaults)]


def _print_list(found: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(found)
    elif found:
        out.print(budgets_table(found))
    else:
        err.print("no budgets")
