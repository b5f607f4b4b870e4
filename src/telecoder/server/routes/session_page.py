"""One session's dashboard page and its live parts.

The page renders the last ``PAGE_EVENTS`` events; ``/head`` re-renders its header (status,
attempts, models, chain, notify toggles) and ``/stream`` appends each new event as HTML over
server-sent events, telling the page when to refetch its header; ``/diff`` is the change (a
failed attempt's kept patch when nothing was pushed), ``/failed.patch`` that patch as a file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, format_sse_event

from telecoder import notifications
from telecoder.channels import configured
from telecoder.diffs import failed_attempt_diff
from telecoder.domain import Event, EventKind, FailureKind, Session
from telecoder.errors import Conflict
from telecoder.protocols import Notifying
from telecoder.server.auth import Principal
from telecoder.server.deps import StateDep, ViewerDep
from telecoder.server.diff import DiffUnavailable
from telecoder.server.render import Timeline
from telecoder.server.routes.dashboard import render
from telecoder.server.routes.events import RETRY_MS, keepalive, start_seq
from telecoder.server.routes.sessions import SessionRef
from telecoder.server.schemas import MAX_SEQ
from telecoder.server.state import ServerState

PAGE_EVENTS = 2000  # events rendered into a session page; older ones are a click away

router = APIRouter(include_in_schema=False)


async def _head(state: ServerState, session: Session) -> dict[str, Any]:
    return {
        "s": session,
        "attempts": await state.store.sessions.attempts(session.id),
        "models": await state.store.usage.models(session.id),
        "notify_options": notify_options(state, session),
        "chain": await state.store.chains.members(session.chain_id) if session.chain_id else [],
        "reply": {},
    }


def notify_options(state: ServerState, session: Session) -> list[dict[str, Any]]:
    """The "notify me on Slack/Telegram" toggles: one per configured channel that
    ``TELECODER_NOTIFY_ME`` gives the operator's id on."""
    me = notifications.me_of(state.settings.notify_me)
    found = configured.from_settings(state.settings)
    known = [name for name, channel in found.items() if isinstance(channel, Notifying)]
    return [
        {
            "channel": name,
            "target": f"{name}:{me[name]}",
            "on": f"{name}:{me[name]}" in session.notify,
        }
        for name in sorted(known)
        if name in me
    ]


@router.get("/sessions/{session_id}")
async def session_page(
    request: Request, session_id: SessionRef, state: StateDep, viewer: ViewerDep
) -> Response:
    session = await state.store.sessions.resolve(session_id)
    return await session_view(request, state, viewer, session)


async def session_view(
    request: Request,
    state: ServerState,
    viewer: Principal,
    session: Session,
    reply: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The page; ``reply``: a message or follow-up refused, with its text and why."""
    head = await state.store.events.heads([session.id])
    last = head[session.id].last_seq if session.id in head else 0
    first = max(0, last - PAGE_EVENTS)
    events = await state.store.events.list(session.id, after=first, limit=PAGE_EVENTS)
    after = events[-1].seq if events else first
    context = {
        **await _head(state, session),
        "views": Timeline(session.error).views(events),
        "skipped": first,
        "after": after,
        "reply": reply or {},
    }
    return render(request, state, viewer, "session.html", context, status_code=status_code)


@router.get("/sessions/{session_id}/head")
async def session_head(
    request: Request, session_id: SessionRef, state: StateDep, viewer: ViewerDep
) -> Response:
    session = await state.store.sessions.resolve(session_id)
    return render(request, state, viewer, "_head.html", await _head(state, session))


@router.get("/sessions/{session_id}/stream")
async def session_stream(
    request: Request,
    session_id: SessionRef,
    state: StateDep,
    _: ViewerDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
) -> Response:
    session = await state.store.sessions.resolve(session_id)
    first = start_seq(after, request.headers.get("last-event-id"))
    templates = request.app.state.templates.env
    timeline = Timeline(session.error)

    async def piece(event: Event) -> bytes:
        earlier = None
        if event.kind in (EventKind.STATUS, EventKind.ERROR):  # the head shows the error now
            earlier = timeline.knows((await state.store.sessions.get(session.id)).error)
        html = templates.get_template("_event.html").render(v=timeline.view(event))
        if earlier is not None:  # an error event showed it: now it says "shown above"
            html += templates.get_template("_event.html").render(v=timeline.view(earlier), oob=1)
        frame = format_sse_event(data_str=html, event="event", id=str(event.seq))
        if event.kind in (EventKind.STATUS, EventKind.RESULT, EventKind.USAGE):
            frame += format_sse_event(data_str=str(event.seq), event="head")
        return frame

    async def frames() -> AsyncIterator[bytes]:
        subscription = await state.bus.subscribe(session.id, after=first)
        try:
            yield format_sse_event(retry=RETRY_MS, comment="telecoder")
            async for item in keepalive(subscription):
                yield await piece(item) if item is not None else b": ping\n\n"
            if not subscription.interrupted:
                yield format_sse_event(data_str="end", event="end", id=str(subscription.last_seq))
        finally:
            subscription.close()

    return EventSourceResponse(frames(), headers={"Cache-Control": "no-cache"})


@router.get("/sessions/{session_id}/diff")
async def session_diff(
    request: Request, session_id: SessionRef, state: StateDep, viewer: ViewerDep
) -> Response:
    session = await state.store.sessions.resolve(session_id)
    if session.failure_kind == FailureKind.VERIFY_FAILED:  # nothing pushed: the kept patch
        with contextlib.suppress(DiffUnavailable):
            diff = await failed_attempt_diff(state.store, session)
            context = {
                "diff": diff,
                "reason": None,
                "failed_patch": f"/sessions/{session.id}/failed.patch",
            }
            return render(request, state, viewer, "_diff.html", context)
    try:
        diff = await state.diff_source(session, await state.store.sessions.attempts(session.id))
    except (DiffUnavailable, Conflict) as e:
        return render(request, state, viewer, "_diff.html", {"diff": None, "reason": e.message})
    return render(request, state, viewer, "_diff.html", {"diff": diff, "reason": None})


@router.get("/sessions/{session_id}/failed.patch")
async def failed_patch(session_id: SessionRef, state: StateDep, _: ViewerDep) -> Response:
    """The failed attempt's work as a patch file (``git apply`` it to look at it)."""
    session = await state.store.sessions.resolve(session_id)
    diff = await failed_attempt_diff(state.store, session)
    return Response(
        diff.text,
        media_type="text/x-diff; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{session.id}-failed.patch"'},
    )
