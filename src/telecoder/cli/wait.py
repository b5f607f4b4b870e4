"""``telecoder wait ID...``: follow several sessions until each has ended.

A line for each session as it ends (with ``--json``, its record as one JSON line); the exit code
is 0 when every one succeeded, else the worst: 1 if any failed or is dead, 5 if any was
cancelled (and none failed), 10 when ``--timeout`` passed first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

import typer

from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import Exit, exit_for, final_line, out, print_json_line
from telecoder.domain import Session

POLL_SECONDS = 0.5


def wait(
    session_ids: Annotated[list[str], typer.Argument(help="Session ids (or unique prefixes).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per session as it ends.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 10).", min=0)
    ] = None,
    server: ServerOption = None,
) -> None:
    """Wait for sessions to end: exit 0 if all succeeded, else the failure's exit code."""
    if server:
        from telecoder.cli.remote import connect
        from telecoder.domain.wire import session_of

        async def remote() -> Exit:
            async with connect(server) as api:

                async def fetch(ref: str) -> Session:
                    return session_of(await api.get(ref))

                return await _wait(session_ids, fetch, as_json=as_json, give_up_after=timeout)

        raise typer.Exit(run_async(remote()))
    settings = load_settings()

    async def local() -> Exit:
        async with opened(settings) as store:
            return await _wait(
                session_ids, store.sessions.resolve, as_json=as_json, give_up_after=timeout
            )

    raise typer.Exit(run_async(local()))


async def _wait(
    refs: Sequence[str],
    fetch: Callable[[str], Awaitable[Session]],
    *,
    as_json: bool,
    give_up_after: float | None,
) -> Exit:
    # Every id is resolved first: a typo fails at once (exit 3), before any waiting.
    pending = {s.id: s for s in await asyncio.gather(*(fetch(r) for r in dict.fromkeys(refs)))}
    codes: list[Exit] = []
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    while pending:
        for sid in list(pending):
            session = pending[sid] = await fetch(sid)
            if not session.status.terminal:
                continue
            del pending[sid]
            codes.append(exit_for(session))
            if as_json:
                print_json_line(session.to_dict())
            else:
                out.print(f"{session.id} {final_line(session)}")
        if not pending:
            break
        if deadline is not None and time.monotonic() >= deadline:
            if not as_json:
                out.print(f"still running: {' '.join(pending)}")
            return Exit.TIMED_OUT
        await asyncio.sleep(POLL_SECONDS)
    if all(c == Exit.OK for c in codes):
        return Exit.OK
    return Exit.TASK_FAILED if Exit.TASK_FAILED in codes else Exit.CANCELLED
