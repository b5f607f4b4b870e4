"""``/api/costs`` (what model traffic cost, grouped), ``/api/costs/estimate`` (what a task
would likely cost) and the dashboard's ``/costs`` page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from telecoder import engine_choice, registry
from telecoder.assemble import build_workspace
from telecoder.errors import BadInput, EngineNotFound
from telecoder.estimate import MAX_PROMPT, estimate
from telecoder.server import roles
from telecoder.server.charts import day_bars
from telecoder.server.cost_schemas import CostsOut, EstimateOut
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, ViewerDep
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ENGINE_NAME, ErrorOut, Text
from telecoder.store.costs import By
from telecoder.timerange import FORMS, parse_range

router = APIRouter(prefix="/api/costs", tags=["costs"])
pages = APIRouter(include_in_schema=False)

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    422: {"model": ErrorOut, "description": "A bad ``by``, time, or range; ``detail`` says."},
}
Since = Annotated[
    Text | None, Query(max_length=64, description=f"From this time on (inclusive): {FORMS}.")
]
Until = Annotated[
    Text | None,
    Query(max_length=64, description="Up to this time (exclusive; a date: the end of that day)."),
]


@router.get("", responses=_ERRORS, summary="What model traffic cost, in total and grouped")
async def costs(
    store: StoreDep,
    principal: PrincipalDep,
    by: Annotated[By | None, Query(description="Group by this; none: totals only.")] = None,
    since: Since = None,
    until: Until = None,
    top: Annotated[int, Query(ge=0, le=100, description="How many costliest sessions.")] = 10,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many groups.")] = 100,
) -> CostsOut:
    """Totals over ``[since, until)`` of every request the gateway forwarded, with the per-day
    series (UTC days, days without use at 0) and the costliest sessions. Requests to a model
    without a known price are counted in ``unpriced_requests``, never priced. A member's
    costliest sessions are their own (the totals are everyone's)."""
    start, stop = parse_range(since, until)
    user = roles.list_owner(principal)
    report = await store.costs.report(
        by=by, since=start, until=stop, top=top, limit=limit, user=user
    )
    return CostsOut.model_validate(report.to_dict())


@router.get(
    "/estimate",
    responses={
        **_ERRORS,
        422: {"model": ErrorOut, "description": "An unknown engine or repository, or bad input."},
    },
    summary="What a task would likely cost, from its repository's similar sessions",
)
async def estimate_cost(
    state: StateDep,
    _: PrincipalDep,
    repo: Annotated[Text, Query(max_length=4096, description="Path or git URL.")],
    prompt: Annotated[Text, Query(max_length=MAX_PROMPT, description="The task, as for a run.")],
    engine: Annotated[
        Text | None, Query(pattern=ENGINE_NAME, description="The engine; the server's default.")
    ] = None,
    model: Annotated[Text | None, Query(max_length=200)] = None,
) -> EstimateOut:
    """The median cost of the repository's finished sessions most like this task (same engine
    and model where there are enough), their range and how many there are; nothing is run."""
    for name, value in (("repo", repo), ("prompt", prompt)):
        if not value.strip():
            raise BadInput(f"{name}: must not be blank")
    known = registry.names("engines")
    chosen = engine or engine_choice.default_engine(state.settings, known)
    if chosen is None:
        raise EngineNotFound(
            engine_choice.no_engine(known, engine_choice.environment(state.settings))
        )
    if chosen not in known:
        raise EngineNotFound(f"unknown engine {chosen!r} (known: {', '.join(sorted(known))})")
    source = await build_workspace(state.settings).resolve(repo)
    found = await estimate(
        state.store, repo=source.spec, engine=chosen, model=model or None, prompt=prompt
    )
    return EstimateOut.model_validate(found.to_dict())


# --- the dashboard page ---

SPANS = ("24h", "7d", "30d", "90d")


@pages.get("/costs")
async def costs_page(
    request: Request,
    state: StateDep,
    viewer: ViewerDep,
    since: Annotated[str | None, Query(max_length=64)] = "30d",
    until: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    since = since or None  # ?since= : all time
    start, stop = parse_range(since, until)
    mine = roles.list_owner(viewer)
    report = await state.store.costs.report(since=start, until=stop, top=10, user=mine)
    tables = {
        by.value: (await state.store.costs.groups(by, since=start, until=stop, limit=20))[0]
        for by in (By.MODEL, By.ENGINE, By.REPO)
    }
    context = {
        "report": report,
        "chart": day_bars(report.days),
        "tables": tables,
        "since": since or "",
        "until": until or "",
        "spans": SPANS,
    }
    return render(request, state, viewer, "costs.html", context)
