"""Best of N over HTTP: ``POST /api/runs/best-of`` starts one (a task and ``attempts`` /
``engines``), ``GET /api/runs/{id}/compare`` shows its candidates and the verdict, ``POST
/api/runs/{id}/pick`` opens the pull request for a person's choice instead of the judge's; and
the dashboard's ``/runs/{id}/compare`` page: the candidates' diffs side by side, each passing one
with a button to pick it."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from telecoder import bestof
from telecoder.assemble import build_judging
from telecoder.diffs import DiffUnavailable
from telecoder.domain import Run, Session
from telecoder.errors import TeleCoderError
from telecoder.server.deps import PrincipalDep, StateDep, ViewerDep, limit_writes
from telecoder.server.routes.dashboard import render
from telecoder.server.routes.sessions import _request, require_json
from telecoder.server.schemas import ENGINE_NAME, ErrorOut, SessionCreate, SessionOut, Text, _In
from telecoder.server.state import ServerState

router = APIRouter(prefix="/api/runs", tags=["runs"])
pages = APIRouter(include_in_schema=False)

ENGINE_SPEC = ENGINE_NAME.removesuffix("$") + r"(:[^\s]{1,200})?$"
RunRef = Annotated[str, Path(pattern=r"^run_[a-z0-9]{1,32}$", description="A run's id.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No run has that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "The run is still being decided."},
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}


class BestOfCreate(SessionCreate):
    """A task run N times, one winner: ``attempts`` candidates, with ``engines`` in turn (one
    candidate each by default), or the task's engine each time."""

    attempts: int | None = Field(
        default=None, ge=2, le=bestof.MAX_ATTEMPTS, description="How many candidates."
    )
    engines: list[Annotated[Text, Field(pattern=ENGINE_SPEC)]] = Field(
        default_factory=list,
        max_length=bestof.MAX_ATTEMPTS,
        description="Their engines, each ``ENGINE`` or ``ENGINE:MODEL`` (a model of its own).",
        examples=[["claude-code", "codex", "opencode:gpt-4.1-mini"]],
    )


class PickIn(_In):
    session_id: Text = Field(max_length=64, description="The candidate to open the PR for.")


class Candidate(BaseModel):
    session: SessionOut
    passed: bool = Field(description="Succeeded with a commit: it may win.")
    lost: str | None = Field(description="Why it cannot win, when it cannot.")


class Comparison(BaseModel):
    """A best-of-N run: its candidates and, once all ended, the verdict (``run.spec.verdict``:
    ``winner``, ``reasons``, ``pr_url``, ``lost``, ``picked``)."""

    run: dict[str, Any]
    candidates: list[Candidate]
    verdict: dict[str, Any] | None


class BestOfCreated(BaseModel):
    run: dict[str, Any]
    sessions: list[SessionOut]
    warnings: list[str] = Field(default_factory=list)


async def _comparison(state: ServerState, run_id: str) -> tuple[Run, list[Session], Comparison]:
    run = await state.store.runs.get(run_id)
    sessions = await state.store.runs.sessions(run.id)
    candidates = [
        Candidate(session=SessionOut.of(s), passed=(lost := bestof.standing(s)) is None, lost=lost)
        for s in sessions
    ]
    found = Comparison(run=run.to_dict(), candidates=candidates, verdict=bestof.verdict_of(run))
    return run, sessions, found


@router.post(
    "/best-of",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_json), Depends(limit_writes)],
    responses={**_WRITE_ERRORS, 415: {"model": ErrorOut, "description": "Not JSON."}},
    summary="Run a task N times, one winner",
)
async def create_best_of(
    body: BestOfCreate, state: StateDep, principal: PrincipalDep
) -> BestOfCreated:
    """The candidates run on their own branches and open no pull request; when all ended they
    are judged and ONE pull request is opened for the winner."""
    origin = {"channel": "api", "principal": principal.name}
    request = _request(state, body, origin, user=principal.user)
    run, sessions, warnings = await bestof.create(
        state.store, state.intake, request, attempts=body.attempts, engines=body.engines
    )
    state.bus.poke()
    return BestOfCreated(
        run=run.to_dict(), sessions=[SessionOut.of(s) for s in sessions], warnings=warnings
    )


@router.get("/{run_id}/compare", responses=_ERRORS, summary="A best-of-N run's candidates")
async def compare(run_id: RunRef, state: StateDep, _: PrincipalDep) -> Comparison:
    return (await _comparison(state, run_id))[2]


@router.post(
    "/{run_id}/pick",
    dependencies=[Depends(limit_writes)],
    responses=_WRITE_ERRORS,
    summary="Pick a best-of-N run's winner",
)
async def pick(run_id: RunRef, body: PickIn, state: StateDep, _: PrincipalDep) -> Comparison:
    """Open the pull request for ``session_id`` (a candidate that passed) instead of the
    judge's choice: 422 for one that cannot win, 409 while the run is being decided."""
    await build_judging(state.settings, state.store).pick(run_id, body.session_id)
    return (await _comparison(state, run_id))[2]


# --- the dashboard ---------------------------------------------------------------------------


@pages.get("/runs/{run_id}/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request, run_id: RunRef, state: StateDep, viewer: ViewerDep
) -> HTMLResponse:
    run, sessions, found = await _comparison(state, run_id)
    diffs: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for session in sessions:
        try:
            attempts = await state.store.sessions.attempts(session.id)
            diffs[session.id] = await state.diff_source(session, attempts)
        except (DiffUnavailable, TeleCoderError) as e:
            reasons[session.id] = e.message
    context = {"run": run, "found": found, "diffs": diffs, "reasons": reasons}
    return render(request, state, viewer, "compare.html", context)


@pages.post("/runs/{run_id}/pick")
async def pick_form(
    run_id: RunRef,
    state: StateDep,
    _: ViewerDep,
    session_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The page's "pick this one" button."""
    with contextlib.suppress(TeleCoderError):  # the page shows the verdict as it is
        await build_judging(state.settings, state.store).pick(run_id, session_id)
    return RedirectResponse(f"/runs/{run_id}/compare", status_code=303)
