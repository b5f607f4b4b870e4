"""The forms on a session's dashboard page: cancel, retry, raise its budget, answer its
question, notify me, a chat's message, a follow-up. Each is a plain POST answered with a
redirect to the page; a refused message or follow-up renders the page again, saying why."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from telecoder import amounts, chat
from telecoder.errors import BadInput, Conflict, TeleCoderError
from telecoder.server import followup
from telecoder.server.deps import StateDep, ViewerDep
from telecoder.server.routes.session_page import notify_options, session_view
from telecoder.server.routes.sessions import SessionRef
from telecoder.server.schemas import Text

router = APIRouter(include_in_schema=False)


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
    option = next((o for o in notify_options(state, session) if o["channel"] == channel), None)
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


@router.post("/sessions/{session_id}/message")
async def message(
    request: Request,
    session_id: SessionRef,
    state: StateDep,
    viewer: ViewerDep,
    text: Annotated[Text, Form(max_length=chat.MAX_MESSAGE)] = "",
) -> Response:
    """The message box of a chat (``POST /api/sessions/{id}/messages``): its next turn gets it.
    Refused (empty, a turn running, the chat ended): the page again, saying why."""
    session = await state.store.sessions.resolve(session_id)
    try:
        await chat.send(state.store, session.id, text, sender=viewer.name)
    except (BadInput, Conflict) as e:
        reply = {"text": text, "error": e.message}
        code = 422 if isinstance(e, BadInput) else 409
        return await session_view(request, state, viewer, session, reply, code)
    state.bus.poke()
    return RedirectResponse(f"/sessions/{session.id}", status_code=303)


@router.post("/sessions/{session_id}/followup")
async def follow_up(
    request: Request,
    session_id: SessionRef,
    state: StateDep,
    viewer: ViewerDep,
    prompt: Annotated[Text, Form(max_length=100_000)] = "",
) -> Response:
    """The follow-up box of an ended session: a new session in its chain, on its repository
    with its engine, from the branch it pushed (else from where it started)."""
    parent = await state.store.sessions.resolve(session_id)
    try:
        child = await followup.create(state, parent, prompt, sender=viewer.name, user=viewer.user)
    except (BadInput, Conflict) as e:
        reply = {"text": prompt, "error": e.message}
        code = 422 if isinstance(e, BadInput) else 409
        return await session_view(request, state, viewer, parent, reply, code)
    return RedirectResponse(f"/sessions/{child.id}", status_code=303)
