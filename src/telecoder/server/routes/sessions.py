"""``/api/sessions``: submit, list, show, cancel, retry, follow up, diff."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from starlette.exceptions import HTTPException

from telecoder import chat, templates
from telecoder.amounts import BudgetChange
from telecoder.diffs import failed_attempt_diff
from telecoder.domain import Session, SessionStatus
from telecoder.intake import Request as IntakeRequest
from telecoder.server import roles
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, limit_writes
from telecoder.server.schemas import (
    SESSION_REF,
    AnswerCreate,
    BudgetRaise,
    DiffOut,
    ErrorOut,
    MessageAccepted,
    MessageCreate,
    ModelUse,
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
    state: ServerState, body: SessionCreate, *, origin: dict[str, str], user: str | None
) -> tuple[Session, list[str]]:
    """Check and queue a new session (for the API and the dashboard's form) of ``user``; with
    warnings."""
    accepted = await state.intake(_request(state, body, origin, user=user))
    session = await state.store.sessions.create(accepted.session)
    state.bus.poke()
    return session, accepted.warnings


def _request(
    state: ServerState, body: SessionCreate, origin: dict[str, str], *, user: str | None
) -> IntakeRequest:
    prompt, engine = body.prompt or "", body.engine
    if body.template is not None:  # a named prompt (templates.py); its engine unless one given
        prompt, named = templates.render(state.settings.templates_dir, body.template, body.vars)
        engine = engine or named
    return IntakeRequest(
        repo=body.repo,
        prompt=prompt,
        steps=tuple(body.steps),
        engine=engine,
        model=body.model,
        base=body.base,
        mode=body.mode.value,
        priority=body.priority,
        forge=body.forge,
        timeout_seconds=body.timeout_seconds,
        origin=origin,
        tier=body.tier,
        budget_usd=body.budget_usd,
        notify=tuple(body.notify),
        user=user,
    )


async def require_json(request: Request) -> None:
    """415 for a body that is not declared JSON (a form, text, or no Content-Type)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the task as JSON, with the header Content-Type: application/json "
            f"(got {kind or 'no Content-Type'})",
        )


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe submission: a second request with the same key (from the same "
        "caller) gets the first one's session, with 200 instead of 201.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_json), *_write],
    responses={
        **_WRITE_ERRORS,
        200: {"model": SessionCreated, "description": "The session of an Idempotency-Key seen."},
        409: {"model": ErrorOut, "description": "The Idempotency-Key was used for another task."},
        415: {"model": ErrorOut, "description": "The body is not sent as application/json."},
    },
    summary="Submit a task",
)
async def create_session(
    body: SessionCreate,
    state: StateDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SessionCreated:
    origin = {"channel": "api", "principal": principal.name}
    if idempotency_key is None:
        session, warnings = await submit(state, body, origin=origin, user=principal.user)
        return SessionCreated(**SessionOut.of(session).model_dump(), warnings=warnings)
    # Exactly once per (caller, key): the key is stored with the session, in one transaction.
    source = f"api:{principal.name}"
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    deliveries = state.store.deliveries
    found = await deliveries.find(source, idempotency_key, fingerprint=fingerprint)
    if found is None:
        accepted = await state.intake(
            _request(
                state, body, {**origin, "idempotency_key": idempotency_key}, user=principal.user
            )
        )
        once = await deliveries.create_once(
            accepted.session, source=source, key=idempotency_key, fingerprint=fingerprint
        )
        if once.created:
            state.bus.poke()
            return SessionCreated(
                **SessionOut.of(once.session).model_dump(), warnings=accepted.warnings
            )
        found = once.session
    response.status_code = status.HTTP_200_OK
    return SessionCreated(**SessionOut.of(found).model_dump())


@router.get("", responses=_ERRORS, summary="List sessions, newest first")
async def list_sessions(
    store: StoreDep,
    principal: PrincipalDep,
    status: SessionStatus | None = None,
    repo: Annotated[Text | None, Query(max_length=4096)] = None,
    engine: Annotated[Text | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
) -> SessionPage:
    page = await store.sessions.list(
        status=status,
        repo=repo,
        engine=engine,
        limit=limit,
        cursor=cursor,
        user=roles.list_owner(principal),
    )
    return SessionPage(
        sessions=[SessionOut.of(s) for s in page.sessions], next_cursor=page.next_cursor
    )


@router.get("/{session_id}", responses=_ERRORS, summary="One session")
async def get_session(session_id: SessionRef, store: StoreDep, _: PrincipalDep) -> SessionDetail:
    session = await store.sessions.resolve(session_id)
    attempts = await store.sessions.attempts(session.id)
    return SessionDetail(
        **SessionOut.of(session).model_dump(),
        attempts=[a.to_dict() for a in attempts],
        models=[ModelUse(**m) for m in await store.usage.models(session.id)],
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


@router.post(
    "/{session_id}/answer",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Answer a blocked session's question",
)
async def post_answer(
    session_id: SessionRef, body: AnswerCreate, state: StateDep, principal: PrincipalDep
) -> MessageAccepted:
    """The session's agent resumes with ``text`` in the same worktree (``telecoder answer``);
    409 when it is not blocked waiting for an answer."""
    session = await state.store.sessions.resolve(session_id)
    sent = await chat.answer(state.store, session.id, body.text, sender=principal.name)
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
async def get_diff(
    session_id: SessionRef,
    state: StateDep,
    _: PrincipalDep,
    attempt: Annotated[
        str | None,
        Query(
            pattern="^failed$",
            description="`failed`: the work of the last attempt whose checks failed "
            "(verify_failed; it was not pushed), kept as a patch.",
        ),
    ] = None,
) -> DiffOut:
    session = await state.store.sessions.resolve(session_id)
    if attempt == "failed":
        diff = await failed_attempt_diff(state.store, session)
    else:
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
