"""The dashboard: server-rendered pages, htmx for the live parts, no build step.

Live parts are server-sent events carrying HTML: the session list refetches its rows when any
session changes (``/stream/sessions``), a session page appends each event as it arrives and
refreshes its header and diff (``/sessions/{id}/stream``). Forms are plain POSTs carrying the
page's CSRF token, answered with a redirect (so they work without JavaScript too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import ValidationError

from telecoder import amounts, chat, notifications, registry
from telecoder.channels import configured
from telecoder.domain import Event, EventKind, Mode, Session, SessionStatus
from telecoder.errors import BadInput, Conflict, TeleCoderError
from telecoder.protocols import Notifying
from telecoder.server.auth import COOKIE, COOKIE_SECONDS, CSRF_FIELD, Principal
from telecoder.server.deps import StateDep, ViewerDep
from telecoder.server.diff import DiffUnavailable
from telecoder.server.routes.events import KEEPALIVE_SECONDS, RETRY_MS, keepalive, start_seq
from telecoder.server.routes.sessions import SessionRef, submit
from telecoder.server.schemas import MAX_SEQ, SessionCreate
from telecoder.server.state import ServerState

router = APIRouter(include_in_schema=False)

PAGE_EVENTS = 2000  # events rendered into a session page; older ones are a click away


def render(
    request: Request,
    state: ServerState,
    principal: Principal | None,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    templates = request.app.state.templates
    base = {
        "principal": principal,
        "open": state.guard.open,
        "unsafe_runtime": state.settings.runtime == "local",
        "csrf": state.guard.csrf_token(principal) if principal else "",
        "csrf_field": CSRF_FIELD,
    }
    response: HTMLResponse = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code
    )
    return response


def _safe_next(url: str | None) -> str:
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"


# --- login ---


@router.get("/login")
async def login_page(request: Request, state: StateDep, next: str = "/") -> Response:
    if state.guard.open:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, state, None, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(
    request: Request,
    state: StateDep,
    token: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    state.guard.screen(request)
    client = request.client.host if request.client else "?"
    state.login_limiter.hit(f"login@{client}")
    cookie = state.guard.login(token.strip())
    if cookie is None:
        context = {"next": _safe_next(next), "error": "That token is not valid."}
        return render(request, state, None, "login.html", context, status_code=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(_: ViewerDep) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# --- the list ---


async def _rows(state: ServerState, status: SessionStatus | None) -> dict[str, Any]:
    page = await state.store.sessions.list(status=status, limit=100)
    running = await state.store.sessions.list(status=SessionStatus.RUNNING, limit=200)
    busy: dict[str, list[Session]] = {}
    for s in running.sessions:
        busy.setdefault(s.worker_id or "?", []).append(s)
    return {
        "sessions": page.sessions,
        "more": page.next_cursor is not None,
        "busy": busy,
        "workers": state.workers,
        "status": status.value if status else "",
        "now": time.time(),
    }


@router.get("/")
async def sessions_page(
    request: Request, state: StateDep, viewer: ViewerDep, status: SessionStatus | None = None
) -> Response:
    context = {**await _rows(state, status), "statuses": [s.value for s in SessionStatus]}
    return render(request, state, viewer, "sessions.html", context)


@router.get("/partials/sessions")
async def session_rows(
    request: Request, state: StateDep, viewer: ViewerDep, status: SessionStatus | None = None
) -> Response:
    return render(request, state, viewer, "_sessions.html", await _rows(state, status))


@router.get("/stream/sessions")
async def sessions_stream(state: StateDep, _: ViewerDep) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        yield format_sse_event(retry=RETRY_MS, comment="telecoder")
        async with state.bus.session_changes() as changes:
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        at = await changes.get()
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                yield format_sse_event(data_str=str(at), event="changed")

    return EventSourceResponse(frames(), headers={"Cache-Control": "no-cache"})


# --- a new task ---


def _form_context(values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "values": values,
        "errors": errors,
        "engines": registry.names("engines"),
        "modes": [m.value for m in Mode],
    }


@router.get("/new")
async def new_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    values = {"engine": state.settings.engine, "mode": "task", "priority": 0}
    return render(request, state, viewer, "new.html", _form_context(values, {}))


@router.post("/new")
async def new_submit(
    request: Request,
    state: StateDep,
    viewer: ViewerDep,
    repo: Annotated[str, Form()] = "",
    prompt: Annotated[str, Form()] = "",
    engine: Annotated[str, Form()] = "",
    model: Annotated[str, Form()] = "",
    base: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "task",
    priority: Annotated[str, Form()] = "0",
) -> Response:
    values = {
        "repo": repo,
        "prompt": prompt,
        "engine": engine,
        "model": model,
        "base": base,
        "mode": mode,
        "priority": priority,
    }
    errors: dict[str, str] = {}
    try:
        body = SessionCreate.model_validate({k: v for k, v in values.items() if v != ""})
        origin = {"channel": "dashboard", "principal": viewer.name}
        session, _ = await submit(state, body, origin=origin)
    except ValidationError as e:
        for err in e.errors():
            errors[".".join(str(p) for p in err["loc"]) or "form"] = err["msg"]
    except BadInput as e:
        errors["form"] = e.message
    if errors:
        context = _form_context(values, errors)
        return render(request, state, viewer, "new.html", context, status_code=422)
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)


# --- one session ---


async def _head(state: ServerState, session: Session) -> dict[str, Any]:
    return {
        "s": session,
        "attempts": await state.store.sessions.attempts(session.id),
        "models": await state.store.usage.models(session.id),
        "notify_options": _notify_options(state, session),
        "chain": await state.store.chains.members(session.chain_id) if session.chain_id else [],
    }


def _notify_options(state: ServerState, session: Session) -> list[dict[str, Any]]:
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
    head = await state.store.events.heads([session.id])
    last = head[session.id].last_seq if session.id in head else 0
    first = max(0, last - PAGE_EVENTS)
    events = await state.store.events.list(session.id, after=first, limit=PAGE_EVENTS)
    after = events[-1].seq if events else first
    context = {**await _head(state, session), "events": events, "skipped": first, "after": after}
    return render(request, state, viewer, "session.html", context)


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

    def piece(event: Event) -> bytes:
        html = templates.get_template("_event.html").render(e=event)
        frame = format_sse_event(data_str=html, event="event", id=str(event.seq))
        if event.kind in (EventKind.STATUS, EventKind.RESULT, EventKind.USAGE):
            frame += format_sse_event(data_str=str(event.seq), event="head")
        return frame

    async def frames() -> AsyncIterator[bytes]:
        subscription = await state.bus.subscribe(session.id, after=first)
        try:
            yield format_sse_event(retry=RETRY_MS, comment="telecoder")
            async for item in keepalive(subscription):
                yield piece(item) if item is not None else b": ping\n\n"
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
    try:
        diff = await state.diff_source(session, await state.store.sessions.attempts(session.id))
    except (DiffUnavailable, Conflict) as e:
        return render(request, state, viewer, "_diff.html", {"diff": None, "reason": e.message})
    return render(request, state, viewer, "_diff.html", {"diff": diff, "reason": None})


@router.post("/sessions/{session_id}/cancel")
async def cancel(session_id: SessionRef, state: StateDep, _: ViewerDep) -> Response:
    session = await state.store.sessions.resolve(session_id)
    with contextlib.suppress(Conflict):  # finished meanwhile: the page shows how
        await state.store.sessions.cancel(session.id)
    state.bus.poke()
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)


@router.post("/sessions/{session_id}/budget")
async def raise_budget(
    session_id: SessionRef,
    state: StateDep,
    _: ViewerDep,
    amount: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """The "raise budget" form: ``+1.00`` adds, ``5.00`` sets; a waiting session resumes."""
    session = await state.store.sessions.resolve(session_id)
    with contextlib.suppress(TeleCoderError):  # a bad amount or an ended session: as it is
        await state.store.budgets.raise_session(session.id, amounts.budget_change(amount))
    state.bus.poke()
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)


@router.post("/sessions/{session_id}/answer")
async def answer(
    session_id: SessionRef,
    state: StateDep,
    viewer: ViewerDep,
    text: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    """The answer form of a session blocked with a question: its agent resumes with it."""
    session = await state.store.sessions.resolve(session_id)
    with contextlib.suppress(TeleCoderError):  # empty, or answered meanwhile: as it is
        await chat.answer(state.store, session.id, text, sender=viewer.name)
    state.bus.poke()
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)


@router.post("/sessions/{session_id}/notify")
async def notify(
    session_id: SessionRef,
    state: StateDep,
    _: ViewerDep,
    channel: Annotated[str, Form(max_length=64)] = "",
    on: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """The "notify me on …" toggle: adds or removes the operator's id on ``channel``."""
    session = await state.store.sessions.resolve(session_id)
    option = next((o for o in _notify_options(state, session) if o["channel"] == channel), None)
    if option is not None:
        targets = [t for t in session.notify if t != option["target"]]
        if on == "1":
            targets.append(option["target"])
        await state.store.sessions.set_notify(session.id, targets)
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)


@router.post("/sessions/{session_id}/retry")
async def retry(session_id: SessionRef, state: StateDep, _: ViewerDep) -> Response:
    session = await state.store.sessions.resolve(session_id)
    try:
        again = await state.store.sessions.retry(session.id)
    except TeleCoderError:
        return RedirectResponse(f"/sessions/{session.id}", status_code=303)
    state.bus.poke()
    return RedirectResponse(f"/sessions/{again.id}", status_code=303)
