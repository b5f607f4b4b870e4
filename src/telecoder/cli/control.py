"""``telecoder pause`` / ``telecoder resume``: stop and restart all claiming, on every host.

The switch is a row in the database every worker reads at claim time, so one command pauses the
embedded workers of every ``serve`` and every ``telecoder worker`` sharing that database.
Sessions already running finish. ``POST /api/pause`` and ``/api/resume`` do the same over HTTP.
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import TYPE_CHECKING, Annotated

import typer

from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import out, print_json

if TYPE_CHECKING:
    from telecoder.store import PauseState


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def describe(state: PauseState) -> str:
    """One line for people: ``paused since … by …`` or ``running``."""
    if not state.paused:
        return "claims: running (not paused)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.since or 0))
    return f"claims: PAUSED since {since} by {state.by or 'unknown'} (telecoder resume)"


def pause(
    by: Annotated[str | None, typer.Option("--by", help="Who pauses (default user@host).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Pause all claiming on every host: running sessions finish, queued ones wait."""
    settings = load_settings()

    async def go() -> PauseState:
        async with opened(settings) as store:
            return await store.control.pause(by=by or _who())

    state = run_async(go())
    if as_json:
        print_json(state.to_dict())
    else:
        out.print(describe(state))


def resume(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Resume claiming after `telecoder pause`: workers take queued sessions again."""
    settings = load_settings()

    async def go() -> PauseState:
        async with opened(settings) as store:
            return await store.control.resume()

    state = run_async(go())
    if as_json:
        print_json(state.to_dict())
    else:
        out.print(describe(state))
