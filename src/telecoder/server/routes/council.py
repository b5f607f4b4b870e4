"""A council's tally over HTTP: ``GET /api/runs/{id}/tally`` — the JSON of ``telecoder council
tally --json`` (``council.tally_json``): consensus, majority and minority groups, who answered,
who is missing and why."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from telecoder import council
from telecoder.server.deps import PrincipalDep, StateDep
from telecoder.server.schemas import ErrorOut

router = APIRouter(prefix="/api/runs", tags=["runs"])

RunRef = Annotated[str, Path(pattern=r"^run_[a-z0-9]{1,32}$", description="A run's id.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No run has that id."},
    422: {"model": ErrorOut, "description": "The run is not a council."},
}


@router.get("/{run_id}/tally", responses=_ERRORS, summary="A council's tally")
async def tally(run_id: RunRef, state: StateDep, _: PrincipalDep) -> dict[str, Any]:
    """The reviewers' recommendations grouped into consensus, majority and minority, as
    ``telecoder council tally --json`` prints them (reviewers still running are missing)."""
    run, result, reviews = await council.tally(state.store, run_id)
    return council.tally_json(run, result, reviews)
