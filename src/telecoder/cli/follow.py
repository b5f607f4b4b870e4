"""Print a session's events as they are recorded, until it ends."""

from __future__ import annotations

import asyncio
from typing import Any

from telecoder.cli.output import event_json, out, print_json_line, render_event
from telecoder.store import Store

POLL_SECONDS = 0.1


async def follow(
    store: Store,
    session_id: str,
    *,
    after: int = 0,
    keep_following: bool = True,
    as_json: bool = False,
    until: asyncio.Future[Any] | None = None,
) -> int:
    """Print events with ``seq > after``; with ``keep_following``, until the session ends (or
    ``until`` completes). Returns the last seq printed."""
    while True:
        events = await store.events.list(session_id, after=after)
        for event in events:
            if as_json:
                print_json_line(event_json(event))
            elif (line := render_event(event)) is not None:
                out.print(line)
            after = event.seq
        if events:
            continue
        if not keep_following:
            return after
        finished = (
            until.done()
            if until is not None
            else ((await store.sessions.get(session_id)).status.terminal)
        )
        if finished:
            # One last look: the end may have been written after the read above.
            for event in await store.events.list(session_id, after=after):
                if as_json:
                    print_json_line(event_json(event))
                elif (line := render_event(event)) is not None:
                    out.print(line)
                after = event.seq
            return after
        await asyncio.sleep(POLL_SECONDS)
