"""The dashboard: server-rendered pages, htmx for the live parts, no build step.

Live parts are server-sent events carrying HTML: the session list refetches its rows when any
session changes (``/stream/sessions``), a session page appends each event as it arrives and
refreshes its header and diff (``/sessions/{id}/stream``). Forms are plain POSTs carrying the
page's CSRF token, answered with a redirect (so they work without JavaScript too).

This module holds ``render`` (every page's base context) and the front pages: the session list
and its live rows, and the new-task form. Sign-in is ``login``; one session's page is
``session_page``, its forms ``session_forms``; other pages sit with their API routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import ValidationError

from telecoder import engine_choice, registry
from telecoder.domain import Mode, Session, SessionStatus
from telecoder.errors import BadInput
from telecoder.server import roles
from telecoder.server.auth import CSRF_FIELD, Principal
from telecoder.server.deps import StateDep, ViewerDep
from telecoder.server.routes.events import KEEPALIVE_SECONDS, RETRY_MS
from telecoder.server.routes.sessions import submit
from telecoder.server.schemas import SessionCreate
from telecoder.server.state import ServerState

router = APIRouter(include_in_schema=False)


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
        "pause": state.pause,
        "csrf": state.guard.csrf_token(principal) if principal else "",
        "csrf_field": CSRF_FIELD,
    }
    response: HTMLResponse = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code
    )
    return response


# --- the list ---


async def _rows(
    state: ServerState, viewer: Principal, status: SessionStatus | None
) -> dict[str, Any]:
    mine = roles.list_owner(viewer)
    page = await state.store.sessions.list(status=status, limit=100, user=mine)
    running = await state.store.sessions.list(status=SessionStatus.RUNNING, limit=200, user=mine)
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
    context = {**await _rows(state, viewer, status), "statuses": [s.value for s in SessionStatus]}
    return render(request, state, viewer, "sessions.html", context)


@router.get("/partials/sessions")
async def session_rows(
    request: Request, state: StateDep, viewer: ViewerDep, status: SessionStatus | None = None
) -> Response:
    return render(request, state, viewer, "_sessions.html", await _rows(state, viewer, status))


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


def _form_context(
    state: ServerState, values: dict[str, Any], errors: dict[str, str]
) -> dict[str, Any]:
    """The form's engines, each with what it lacks here (not installed, no key); none chosen:
    the repository's, else the default (never ``shell`` unless picked)."""
    names = registry.names("engines")
    env = engine_choice.environment(state.settings)
    found = {a.engine: a for a in engine_choice.survey(names, env)}
    engines = []
    for name in names:
        a = found.get(name)
        if a is None:
            note = _by_name_note(state, name)
        elif not a.installed:
            note = "not installed"
        elif not a.key_set:
            note = f"no key: set {' or '.join(a.keys)}"
        else:
            note = "installed, key set"
        engines.append({"name": name, "note": note, "ready": a is not None and a.ready})
    default = engine_choice.default_engine(state.settings, names)
    return {
        "values": values,
        "errors": errors,
        "engines": engines,
        "default_engine": default,
        "modes": [m.value for m in Mode],
    }


def _by_name_note(state: ServerState, name: str) -> str:
    """What an engine that is never chosen without its name (``shell``, ``acp``) does here."""
    if name == "shell":
        return "runs the prompt as a shell command"
    if name == "acp":
        if state.settings.acp_command:
            return "configured: TELECODER_ACP_COMMAND"
        return "an ACP agent: name it as the model (opencode, gemini, qwen, claude, codex)"
    return "chosen by name only"


@router.get("/new")
async def new_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    values = {"engine": "", "mode": "task", "priority": 0}
    return render(request, state, viewer, "new.html", _form_context(state, values, {}))


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
        session, _ = await submit(state, body, origin=origin, user=viewer.user)
    except ValidationError as e:
        for err in e.errors():
            errors[".".join(str(p) for p in err["loc"]) or "form"] = err["msg"]
    except BadInput as e:
        errors["form"] = e.message
    if errors:
        context = _form_context(state, values, errors)
        return render(request, state, viewer, "new.html", context, status_code=422)
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)
