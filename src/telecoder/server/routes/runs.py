"""``/api/runs``: list runs, show one (its sessions, their dependencies and its totals, the JSON
of ``telecoder runs show --json``), cancel one, retry what failed in one; and the dashboard's
``/runs`` and ``/runs/{id}`` pages (the graph, refreshed every two seconds while it runs).

Creating runs is ``POST /api/runs`` (``run_create.py``).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from telecoder import runs
from telecoder.errors import Conflict
from telecoder.server import roles
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, ViewerDep, limit_writes
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ErrorOut, SessionOut
from telecoder.server.state import ServerState

router = APIRouter(prefix="/api/runs", tags=["runs"])
pages = APIRouter(include_in_schema=False)

RunRef = Annotated[str, Path(pattern=r"^[0-9A-Za-z_-]{1,64}$", description="A run's id.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No run of that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "Nothing to do: the run has ended / nothing failed."},
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


class RunTotals(BaseModel):
    sessions: int = Field(description="How many sessions the run holds.")
    statuses: dict[str, int] = Field(description="How many sessions are in each status.")
    cost_usd: float = Field(description="What its sessions' model requests cost.")
    input_tokens: int
    output_tokens: int
    wall_seconds: float = Field(description="From its creation to its end (or to now).")
    pr_urls: list[str] = Field(description="The pull requests its sessions opened.")


class RunSession(SessionOut):
    """A session of the run (``SessionOut``), with its pull request and what it waits for."""

    pr_url: str | None = Field(description="Its pull request, if it opened one.")
    depends_on: list[str] = Field(description="The sessions it waits for (ids); see ``deps``.")


class RunDep(BaseModel):
    session_id: str
    depends_on: str
    after: str = Field(description="after (only if that one succeeded) or after_any.")


class RunOut(BaseModel):
    """A run with its totals (what ``GET /api/runs`` lists)."""

    id: str
    kind: str = Field(description="fanout, plan, job, best_of or single.")
    name: str | None
    status: str = Field(description="running, succeeded, failed or cancelled.")
    spec: dict[str, Any] = Field(description="What made it.")
    job: str | None
    user: str | None = Field(default=None, description="Whose run it is (who asked for it).")
    created_at: str | None
    updated_at: str | None
    finished_at: str | None
    counts: dict[str, int] = Field(description="Its sessions by status.")
    totals: RunTotals


class RunDetail(RunOut):
    """The shape of ``telecoder runs show --json``."""

    sessions: list[RunSession] = Field(description="Oldest first.")
    deps: list[RunDep]


@router.get("", responses=_ERRORS, summary="List runs, newest first")
async def list_runs(
    store: StoreDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500, description="How many.")] = 50,
) -> list[RunOut]:
    """A member's own runs; everyone's for the other roles."""
    found = []
    for run in await store.runs.list(limit=limit, user=roles.list_owner(principal)):
        data = runs.run_json(run, await store.runs.sessions(run.id), [])
        found.append(RunOut(**data))
    return found


@router.get("/{run_id}", responses=_ERRORS, summary="One run: its sessions, graph and totals")
async def get_run(run_id: RunRef, store: StoreDep, _: PrincipalDep) -> RunDetail:
    return RunDetail(**await runs.load(store, run_id))


@router.post(
    "/{run_id}/cancel",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Cancel every session of the run that has not ended",
)
async def cancel_run(run_id: RunRef, state: StateDep, _: PrincipalDep) -> RunDetail:
    """Waiting, queued and blocked sessions are cancelled at once; running ones are stopped by
    their workers, and the run ends ``cancelled`` with the last of them. 409 when all ended."""
    await runs.cancel_run(state.store, run_id)
    state.bus.poke()
    return RunDetail(**await runs.load(state.store, run_id))


@router.post(
    "/{run_id}/retry-failed",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Run the failed sessions of a run again, and what they skipped",
)
async def retry_failed(run_id: RunRef, state: StateDep, _: PrincipalDep) -> RunDetail:
    """Failed, dead and cancelled sessions are queued for a new attempt, skipped ones wait
    again; the run is ``running`` again. 409 when nothing in it failed."""
    await runs.retry_failed(state.store, run_id)
    state.bus.poke()
    return RunDetail(**await runs.load(state.store, run_id))


# --- the dashboard's pages ---

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 46, 70, 22, 12


async def _graph(state: ServerState, run_id: str) -> dict[str, Any]:
    run = await state.store.runs.get(run_id)
    sessions = await state.store.runs.sessions(run_id)
    deps = await state.store.runs.dependencies(run_id)
    grouped = runs.layers(sessions, deps)
    place: dict[str, tuple[int, int]] = {}
    nodes = []
    for column in grouped:
        for node in column:
            x = PAD + node.layer * (NODE_W + GAP_X)
            y = PAD + node.row * (NODE_H + GAP_Y)
            place[node.session.id] = (x, y)
            nodes.append({"s": node.session, "x": x, "y": y, "pr_url": runs.pr_url(node.session)})
    edges = [
        {
            "x1": place[d.depends_on][0] + NODE_W,
            "y1": place[d.depends_on][1] + NODE_H // 2,
            "x2": place[d.session_id][0],
            "y2": place[d.session_id][1] + NODE_H // 2,
            "any": d.after.value == "after_any",
        }
        for d in deps
        if d.session_id in place and d.depends_on in place
    ]
    names = {s.id: s.task_key or s.id for s in sessions}
    rows = max((len(c) for c in grouped), default=0)
    return {
        "run": run,
        "data": runs.run_json(run, sessions, deps),
        "nodes": nodes,
        "edges": edges,
        "names": names,
        "width": 2 * PAD + len(grouped) * NODE_W + max(0, len(grouped) - 1) * GAP_X,
        "height": 2 * PAD + rows * NODE_H + max(0, rows - 1) * GAP_Y,
        "node_w": NODE_W,
        "node_h": NODE_H,
    }


@pages.get("/runs")
async def runs_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    found = []
    for run in await state.store.runs.list(limit=100, user=roles.list_owner(viewer)):
        sessions = await state.store.runs.sessions(run.id)
        found.append({"run": run, "totals": runs.summary(run, sessions).to_dict()})
    return render(request, state, viewer, "runs.html", {"runs": found})


@pages.get("/runs/{run_id}")
async def run_page(
    request: Request, run_id: RunRef, state: StateDep, viewer: ViewerDep
) -> Response:
    return render(request, state, viewer, "run.html", await _graph(state, run_id))


@pages.get("/runs/{run_id}/graph")
async def run_fragment(
    request: Request, run_id: RunRef, state: StateDep, viewer: ViewerDep
) -> Response:
    """The live part of the run page (htmx polls it while the run runs)."""
    return render(request, state, viewer, "_run.html", await _graph(state, run_id))


@pages.post("/runs/{run_id}/cancel")
async def cancel_page(run_id: RunRef, state: StateDep, _: ViewerDep) -> Response:
    with contextlib.suppress(Conflict):  # ended meanwhile: the page shows how
        await runs.cancel_run(state.store, run_id)
    state.bus.poke()
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


@pages.post("/runs/{run_id}/retry-failed")
async def retry_page(run_id: RunRef, state: StateDep, _: ViewerDep) -> Response:
    with contextlib.suppress(Conflict):
        await runs.retry_failed(state.store, run_id)
    state.bus.poke()
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
