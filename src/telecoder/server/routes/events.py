"""``/api/sessions/{id}/events``: the session's log, live (SSE) or in pages (JSON).

SSE: every event is sent with ``id: <seq>`` and ``event: <kind>``, its data the event as JSON.
A reconnecting client sends ``Last-Event-ID`` and gets exactly what it missed; ``?after=N``
does the same for a first connection. When the session has finished and its last event is
sent, an ``end`` event carries the final status and the stream closes. A comment line every
15 s keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event

from telecoder.bus import Bus, Subscription
from telecoder.domain import Event
from telecoder.errors import BadInput
from telecoder.server.deps import BusDep, PrincipalDep, StoreDep
from telecoder.server.routes.sessions import _ERRORS, SessionRef
from telecoder.server.schemas import MAX_SEQ, EventOut, EventPage
from telecoder.store import Store

router = APIRouter(prefix="/api/sessions", tags=["events"])

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000

_SSE_SCHEMA = {
    "type": "object",
    "description": "SSE frames: id = seq, event = kind, data = an Event as JSON; last: end.",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string"},
    },
}


# ASCII digits only (str.isdigit also takes '²' and '١'), and few enough that int() is cheap.
_SEQ = re.compile(rf"[0-9]{{1,{len(str(MAX_SEQ))}}}")


def start_seq(after: int | None, last_event_id: str | None) -> int:
    """Where a stream starts: after ``Last-Event-ID`` when reconnecting, else ``after``."""
    if last_event_id is not None and last_event_id.strip():
        value = last_event_id.strip()
        if not _SEQ.fullmatch(value) or int(value) > MAX_SEQ:
            shown = value if len(value) <= 40 else value[:40] + f"… ({len(value)} characters)"
            raise BadInput(f"Last-Event-ID must be an event's seq (0 to {MAX_SEQ}), not {shown!r}")
        return int(value)
    return after or 0


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


@router.get(
    "/{session_id}/events",
    responses={
        **_ERRORS,
        200: {
            "model": EventPage,
            "description": "Server-sent events; with ``Accept: application/json``, a page.",
            "content": {"text/event-stream": {"schema": _SSE_SCHEMA}},
        },
    },
    response_class=Response,
    summary="The session's events: live, or a page",
)
async def session_events(
    session_id: SessionRef,
    request: Request,
    store: StoreDep,
    bus: BusDep,
    _: PrincipalDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="Start after seq")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size (JSON)")] = 200,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> Response:
    session = await store.sessions.resolve(session_id)
    first = start_seq(after, last_event_id)
    if wants_json(request):
        page = await store.events.list(session.id, after=first, limit=limit + 1)
        events = page[:limit]
        body = EventPage(
            events=[EventOut.of(e) for e in events],
            next_after=events[-1].seq if events else first,
            more=len(page) > limit,
            status=session.status,
        )
        return JSONResponse(body.model_dump(mode="json"))
    return EventSourceResponse(
        sse_frames(bus, store, session.id, first),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_FRAMES: OrderedDict[tuple[str, int], bytes] = OrderedDict()
_FRAMES_KEPT = 4096  # recent events' frames: a live event goes to every stream of its session


def frame(event: Event) -> bytes:
    """The event's SSE frame, encoded once however many streams send it (events never change:
    ``(session_id, seq)`` names one)."""
    key = (event.session_id, event.seq)
    encoded = _FRAMES.get(key)
    if encoded is None:
        data = EventOut.of(event).model_dump_json()
        encoded = format_sse_event(data_str=data, event=event.kind.value, id=str(event.seq))
        _FRAMES[key] = encoded
        if len(_FRAMES) > _FRAMES_KEPT:
            _FRAMES.popitem(last=False)
    return encoded


async def sse_frames(bus: Bus, store: Store, session_id: str, after: int) -> AsyncIterator[bytes]:
    """The frames of one stream; ends after the ``end`` event or when the client goes.

    The subscription is made here, once the response streams: a client gone before that
    leaves no watcher behind.
    """
    subscription = await bus.subscribe(session_id, after=after)
    try:
        yield format_sse_event(retry=RETRY_MS, comment="telecoder")
        async for item in keepalive(subscription):
            if item is None:
                yield b": ping\n\n"
                continue
            yield frame(item)  # resumed once the server has written it to the socket
            if subscription.live:
                bus.written.add(time.time() - item.ts)
        if subscription.interrupted:
            return  # lag or shutdown: the client reconnects and replays from Last-Event-ID
        session = await store.sessions.get(session_id)
        yield format_sse_event(
            data_str=f'{{"status": "{session.status.value}"}}',
            event="end",
            id=str(subscription.last_seq),
        )
    finally:
        subscription.close()


async def keepalive(subscription: Subscription) -> AsyncIterator[Event | None]:
    """The subscription's events, with a None whenever it has been quiet for a while."""
    while True:
        try:
            item = await subscription.next(KEEPALIVE_SECONDS)
        except StopAsyncIteration:
            return
        yield item
