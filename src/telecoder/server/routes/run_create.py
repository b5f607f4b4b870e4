"""``POST /api/runs``: make a run — a fan-out over repositories, a plan, or a task after
another session — in one call and one transaction (``telecoder.runmake``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from pydantic import Field

from telecoder import plans, runmake
from telecoder.errors import SessionNotFound
from telecoder.intake import Request
from telecoder.server import roles
from telecoder.server.deps import PrincipalDep, StateDep, limit_writes
from telecoder.server.routes.runs import RunDetail
from telecoder.server.routes.sessions import _WRITE_ERRORS, require_json
from telecoder.server.runs_schemas import RunCreate

router = APIRouter(prefix="/api/runs", tags=["runs"])


class RunCreated(RunDetail):
    warnings: list[str] = Field(
        default_factory=list, description="Things to know, e.g. uncommitted changes left out."
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_json), Depends(limit_writes)],
    responses={
        **_WRITE_ERRORS,
        404: {"model": _WRITE_ERRORS[422]["model"], "description": "No session ``after`` names."},
        422: {
            "model": _WRITE_ERRORS[422]["model"],
            "description": "Invalid input, or a repository or task intake refused (named in "
            "the message: nothing was queued), a bad plan (duplicate or unknown ids, a cycle).",
        },
    },
    summary="Make a run: a task over many repositories, a plan, or a task after another",
)
async def create_run(body: RunCreate, state: StateDep, principal: PrincipalDep) -> RunCreated:
    request = Request(
        repo=body.repo or "",
        prompt=body.prompt or "",
        engine=body.engine,
        model=body.model,
        base=body.base,
        mode=body.mode.value,
        priority=body.priority,
        forge=body.forge,
        timeout_seconds=body.timeout_seconds,
        origin={"channel": "api", "principal": principal.name},
        user=principal.user,
        tier=body.tier,
        budget_usd=body.budget_usd,
        notify=tuple(body.notify),
    )
    store = state.store
    if body.after is not None and principal.role == "member":
        anchor = await store.sessions.resolve(body.after)  # only after one of their own
        if not roles.owns(principal, anchor.user):
            raise SessionNotFound(f"no session {body.after!r} to run after")
    if body.tasks is not None:
        document = {"name": body.name, "repo": body.repo, "engine": body.engine}
        plan = plans.parse(
            {**{k: v for k, v in document.items() if v is not None}, "tasks": body.tasks},
            source="the plan",
        )
        made = await runmake.from_plan(store, state.intake, request, plan)
    elif body.after is not None:
        made = await runmake.after(store, state.intake, request, body.after)
    else:
        made = await runmake.fan_out(store, state.intake, request, body.repos or [], name=body.name)
    state.bus.poke()
    return RunCreated.model_validate({**made.to_dict(), "warnings": made.warnings})
