"""``/api/goals``: goals planned by a model, approved (or edited) into runs, as
``telecoder goals``.

``POST /api/goals`` waits for the planner (seconds); the goal comes back ``proposed`` with its
plan, or ``failed`` saying why. Approval makes the run in one transaction; a task a repository
check refuses is a 422 naming the task, and the goal stays ``proposed``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, status
from pydantic import BaseModel, Field

from telecoder import goals
from telecoder.planner import Plan, planner_of
from telecoder.server import roles
from telecoder.server.deps import PrincipalDep, SettingsDep, StateDep, StoreDep, limit_writes
from telecoder.server.schemas import ErrorOut, Text, _In
from telecoder.store import Goal

router = APIRouter(prefix="/api/goals", tags=["goals"])

GoalId = Annotated[str, Path(pattern=r"^goal_[0-9a-z]{1,32}$", description="The goal's id.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No goal of that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "The goal's status does not allow it."},
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


class GoalCreate(_In):
    text: Text = Field(min_length=1, max_length=goals.MAX_TEXT, description="The goal.")
    repo: Text | None = Field(
        default=None,
        max_length=2048,
        description="Its repository: a registered name, a URL, owner/name or a path on the "
        "server; tasks that name none run there.",
    )


class GoalApprove(_In):
    plan: Plan | None = Field(default=None, description="An edited plan instead of the goal's.")


class GoalOut(BaseModel):
    """The shape of ``telecoder goals show ID --json``."""

    id: str
    text: str
    status: str = Field(
        description="planning, proposed, approved, running, done, failed or dropped."
    )
    plan: dict[str, Any] | None = Field(description="{tasks: [{id, prompt, repo, …}]}")
    repo: str | None
    run_id: str | None
    run_status: str | None
    error: str | None = Field(description="Why planning failed, or the run could not be made.")
    origin: dict[str, Any] | None
    user: str | None = Field(default=None, description="Who added it; its run is theirs.")
    created_at: str | None
    updated_at: str | None


class GoalsOut(BaseModel):
    """The shape of ``telecoder goals list --json``."""

    goals: list[GoalOut] = Field(description="Newest first.")


def _out(goal: Goal) -> GoalOut:
    return GoalOut(**goal.to_dict())


@router.get("", responses=_ERRORS, summary="Goals, newest first")
async def list_goals(store: StoreDep, principal: PrincipalDep) -> GoalsOut:
    """A member's own goals; everyone's for the other roles."""
    found = await store.goals.list(limit=200, user=roles.list_owner(principal))
    return GoalsOut(goals=[_out(g) for g in found])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Add a goal and have the planner decompose it",
)
async def add_goal(
    body: GoalCreate, store: StoreDep, settings: SettingsDep, principal: PrincipalDep
) -> GoalOut:
    planner = planner_of(settings)
    goal = await goals.add(store, planner, body.text, repo=body.repo, user=principal.user)
    return _out(goal)


@router.get("/{goal_id}", responses=_ERRORS, summary="A goal, its plan and its run's status")
async def get_goal(goal_id: GoalId, store: StoreDep, _: PrincipalDep) -> GoalOut:
    return _out(await store.goals.get(goal_id))


@router.post(
    "/{goal_id}/approve",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Approve the goal's plan (or an edited one): it becomes a run",
)
async def approve_goal(
    goal_id: GoalId, state: StateDep, _: PrincipalDep, body: GoalApprove | None = None
) -> GoalOut:
    edited = body.plan if body is not None else None
    goal, _run = await goals.approve(state.store, state.intake, goal_id, edited)
    return _out(goal)


@router.post(
    "/{goal_id}/drop",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Drop a goal that has no run",
)
async def drop_goal(goal_id: GoalId, store: StoreDep, _: PrincipalDep) -> GoalOut:
    return _out(await store.goals.drop(goal_id))
