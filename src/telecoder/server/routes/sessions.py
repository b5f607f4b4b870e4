"""``/api/sessions``: submit, list, show, cancel, retry, follow up, diff."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from telecoder import chat
from telecoder.amounts import BudgetChange
from telecoder.domain import Session, SessionStatus
from telecoder.intake import Request
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, limit_writes
from telecoder.server.schemas import (
    SESSION_REF,
    BudgetRaise,
    DiffOut,
    ErrorOut,
    MessageAccepted,
    MessageCreate,
    SessionCreate,
    SessionCreated,
    SessionDetail,
    SessionOut,
    SessionPage,
    Text,
)
from telecoder.server.state import ServerState

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

SessionRef = Annotated[
    str, Path(pattern=SESSION_REF, description="A session id, or a unique prefix of it.")
]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    403: {"model": ErrorOut, "description": "A request from another origin, or no CSRF token."},
    404: {"model": ErrorOut, "description": "No session has that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``fields`` says which."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "The session's state does not allow this."},
    413: {"model": ErrorOut, "description": "The request body is too large."},
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


async def submit(
    state: ServerState, body: SessionCreate, *, origin: dict[str, str]
) -> tuple[Session, list[str]]:
    """Check and queue a new session (for the API and the dashboard's form); with warnings."""
    request = Request(
        repo=body.repo,
        prompt=body.prompt,
        engine=body.engine,
        model=body.model,
        base=body.base,
        mode=body.mode.value,
        priority=body.priority,
        forge=body.forge,
        timeout_seconds=body.timeout_seconds,
        origin=origin,
        budget_usd=body.budget_usd,
    )
    accepted = await state.intake(request)
    session = await state.store.sessions.create(accepted.session)
    state.bus.poke()
    return session, accepted.warnings


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Submit a task",
)
async def create_session(
    body: SessionCreate, state: StateDep, principal: PrincipalDep
) -> SessionCreated:
    origin = {"channel": "api", "principal": principal.name}
    session, warnings = await submit(state, body, origin=origin)
    return SessionCreated(**SessionOut.of(session).model_dump(), warnings=warnings)


@router.get("", responses=_ERRORS, summary="List sessions, newest first")
async def list_sessions(
    store: StoreDep,
    _: PrincipalDep,
    status: SessionStatus | None = None,
    repo: Annotated[Text | None, Query(max_length=4096)] = None,
    engine: Annotated[Text | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
) -> SessionPage:
    page = await store.sessions.list(
        status=status, repo=repo, engine=engine, limit=limit, cursor=cursor
    )
    return SessionPage(
        sessions=[SessionOut.of(s) for s in page.sessions], next_cursor=page.next_cursor
    )


@router.get("/{session_id}", responses=_ERRORS, summary="One session")
async def get_session(session_id: SessionRef, store: StoreDep, _: PrincipalDep) -> SessionDetail:
    session = await store.sessions.resolve(session_id)
    attempts = await store.sessions.attempts(session.id)
    return SessionDetail(
        **SessionOut.of(session).model_dump(), attempts=[a.to_dict() for a in attempts]
    )


@router.post("/{session_id}/cancel", dependencies=_write, responses=_WRITE_ERRORS, summary="Cancel")
async def cancel_session(session_id: SessionRef, state: StateDep, _: PrincipalDep) -> SessionOut:
    """A queued session is cancelled at once; a running one is stopped by its worker."""
    session = await state.store.sessions.resolve(session_id)
    cancelled = await state.store.sessions.cancel(session.id)
    state.bus.poke()
    return SessionOut.of(cancelled)


@router.post(
    "/{session_id}/retry",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Run a finished session again",
)
async def retry_session(session_id: SessionRef, state: StateDep, _: PrincipalDep) -> SessionOut:
    """A new session with the same task, on the same branch; the old one is kept."""
    session = await state.store.sessions.resolve(session_id)
    again = await state.store.sessions.retry(session.id)
    state.bus.poke()
    return SessionOut.of(again)


@router.post(
    "/{session_id}/budget",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Raise (or set) a session's budget",
)
async def raise_budget(
    session_id: SessionRef, body: BudgetRaise, state: StateDep, _: PrincipalDep
) -> SessionOut:
    """``{"add": 1.0}`` adds a dollar, ``{"usd": 5.0}`` sets five. A session waiting
    ``blocked`` on its budget is queued again and resumes its agent where it stopped; a running
    one goes on under the new budget. 409 for an ended session; 422 when a waiting session's
    new budget is not above what it spent."""
    session = await state.store.sessions.resolve(session_id)
    if body.add is not None:
        change = BudgetChange(amount=body.add, add=True)
    else:
        assert body.usd is not None
        change = BudgetChange(amount=body.usd)
    raised = await state.store.budgets.raise_session(session.id, change)
    state.bus.poke()
    return SessionOut.of(raised)


@router.post(
    "/{session_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Send a follow-up to a chat session",
)
async def post_message(
    session_id: SessionRef, body: MessageCreate, state: StateDep, principal: PrincipalDep
) -> MessageAccepted:
    """Recorded in the session's log as a ``message`` from the user; a chat waiting for one is
    queued for its next turn (``telecoder.chat.send``, as ``telecoder send`` does)."""
    session = await state.store.sessions.resolve(session_id)
    sent = await chat.send(state.store, session.id, body.text, sender=principal.name)
    state.bus.poke()
    return MessageAccepted(session_id=session.id, seq=sent.seq)


@router.get(
    "/{session_id}/diff",
    responses={
        **_ERRORS,
        404: {"model": ErrorOut, "description": "No such session, or no diff to show."},
        409: {"model": ErrorOut, "description": "The session has no workspace yet."},
    },
    summary="The diff of the session's branch",
)
async def get_diff(session_id: SessionRef, state: StateDep, _: PrincipalDep) -> DiffOut:
    session = await state.store.sessions.resolve(session_id)
    diff = await state.diff_source(session, await state.store.sessions.attempts(session.id))
    return DiffOut(
        session_id=session.id,
        attempt=diff.attempt,
        base_sha=diff.base_sha,
        head_sha=diff.head_sha,
        diff=diff.text,
        truncated=diff.truncated,
        files_changed=diff.files_changed,
        insertions=diff.insertions,
        deletions=diff.deletions,
    )
