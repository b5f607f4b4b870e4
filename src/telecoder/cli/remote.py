"""The session commands against a TeleCoder server (``--server URL`` or ``TELECODER_SERVER``).

Each function here is the remote twin of a command in ``run.py`` or ``sessions.py``: the same
arguments, the same output (``output.py`` renders the records made of the API's JSON; ``--json``
prints the API's JSON as received) and the same exit codes. The token comes from
``TELECODER_TOKEN`` — an environment variable, never an option, so it stays out of ``ps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import typer

from telecoder import submit
from telecoder.cli.common import run_async
from telecoder.cli.options import TOKEN_ENV
from telecoder.cli.output import (
    Exit,
    budgets_table,
    err,
    event_json,
    exit_for,
    final_line,
    out,
    print_json,
    print_json_line,
    print_sessions,
    render_event,
    show_session,
)
from telecoder.client import Client, End, Json
from telecoder.domain import Event, EventKind, SessionStatus
from telecoder.domain.wire import attempts_of, session_of
from telecoder.errors import Conflict


@contextlib.asynccontextmanager
async def connect(server: str) -> AsyncIterator[Client]:
    async with Client(server, token=os.environ.get(TOKEN_ENV) or None) as api:
        yield api


absolute = submit.absolute


def _print_session(data: Json, as_json: bool) -> None:
    if as_json:
        print_json(data)
    else:
        out.print(data["id"])


def _print_event(event: Event, as_json: bool) -> None:
    if as_json:
        print_json_line(event_json(event))
    elif (line := render_event(event)) is not None:
        out.print(line)


def run(server: str, body: dict[str, Any], *, detach: bool, as_json: bool) -> None:
    """Queue ``body`` (``submit.session_body``) on the server; without ``detach``, watch it."""

    async def go() -> Exit:
        async with connect(server) as api:
            created = await api.create(body)
            for warning in created.pop("warnings", []):
                err.print(f"[yellow]warning:[/] {warning}")
            if detach:
                _print_session(created, as_json)
                return Exit.OK
            return await watch(api, created, as_json=as_json)

    raise typer.Exit(run_async(go()))


async def watch(api: Client, session: Json, *, as_json: bool) -> Exit:
    """Stream a session the server runs until it ends, then print it; Ctrl-C cancels it
    (a second Ctrl-C stops watching)."""
    session_id = session["id"]
    if not as_json:
        err.print(f"session [bold]{session_id}[/] · branch {session['branch']}")
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    pending: set[asyncio.Task[object]] = set()
    interrupts = 0

    async def cancel() -> None:
        with contextlib.suppress(Conflict):  # it finished meanwhile
            await api.cancel(session_id)

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1 and me is not None:
            me.cancel()
            return
        task = loop.create_task(cancel())
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        async for item in api.live(session_id):
            if isinstance(item, End):
                break
            if not as_json:
                _print_event(item, as_json=False)
            if item.kind == EventKind.STATUS and item.data.get("status") == "blocked":
                break  # a chat's turn is over: it waits for a message
        if pending:
            await asyncio.wait(pending)
        final = await api.get(session_id)
    except asyncio.CancelledError:
        return Exit.INTERRUPTED
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    finished = session_of(final)
    if as_json:
        print_json(final)
    else:
        out.print(final_line(finished))
    return exit_for(finished)


def list_sessions(
    server: str,
    *,
    status: SessionStatus | None,
    repo: str | None,
    engine: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    async def go() -> None:
        async with connect(server) as api:
            page = await api.page(
                status=status.value if status else None,
                repo=repo,
                engine=engine,
                limit=limit,
                cursor=cursor,
            )
        if as_json:
            print_json(page)
            return
        print_sessions([session_of(s) for s in page["sessions"]], page.get("next_cursor"))

    run_async(go())


def show(server: str, *, session_id: str, as_json: bool) -> None:
    async def go() -> None:
        async with connect(server) as api:
            session = await api.get(session_id)
        if as_json:
            print_json(session)
        else:
            show_session(session_of(session), attempts_of(session), session.get("models", []))

    run_async(go())


def logs(server: str, *, session_id: str, follow: bool, as_json: bool) -> None:
    async def go() -> None:
        async with connect(server) as api:
            full_id = (await api.get(session_id))["id"]
            if not follow:
                async for event in api.recorded(full_id):
                    _print_event(event, as_json)
                return
            async for item in api.live(full_id):
                if isinstance(item, End):
                    return
                _print_event(item, as_json)

    run_async(go())


def cancel(server: str, *, session_id: str, as_json: bool) -> None:
    async def go() -> None:
        async with connect(server) as api:
            session = await api.cancel(session_id)
        if as_json:
            print_json(session)
        elif session["status"] == SessionStatus.CANCELLED:
            out.print(f"{session['id']} cancelled")
        else:
            out.print(f"{session['id']} cancel requested; its worker stops it")

    run_async(go())


def retry(server: str, *, session_id: str, detach: bool, as_json: bool) -> None:
    async def go() -> Exit:
        async with connect(server) as api:
            again = await api.retry(session_id)
            if detach:
                _print_session(again, as_json)
                return Exit.OK
            return await watch(api, again, as_json=as_json)

    raise typer.Exit(run_async(go()))


def raise_budget(server: str, *, session_id: str, body: dict[str, Any], as_json: bool) -> None:
    """``telecoder budget`` against a server: a waiting session resumes on its workers."""

    async def go() -> None:
        async with connect(server) as api:
            was = (await api.get(session_id))["status"]
            session = await api.raise_budget(session_id, body)
        if as_json:
            print_json(session)
        else:
            waited = was == "blocked" and session["status"] == "queued"
            resumed = " · resumed (queued)" if waited else ""
            out.print(f"{session['id']}: budget ${session['budget_usd']:.2f}{resumed}")

    run_async(go())


def list_budgets(server: str, *, as_json: bool) -> None:
    async def go() -> list[Json]:
        async with connect(server) as api:
            return await api.budgets()

    _print_budgets(run_async(go()), as_json)


def put_budget(server: str, *, body: dict[str, Any], as_json: bool) -> None:
    async def go() -> list[Json]:
        async with connect(server) as api:
            return await api.put_budget(body)

    _print_budgets(run_async(go()), as_json)


def _print_budgets(found: list[Json], as_json: bool) -> None:
    if as_json:
        print_json(found)
    elif found:
        out.print(budgets_table(found))
    else:
        err.print("no budgets")
