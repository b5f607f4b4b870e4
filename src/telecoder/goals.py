"""Goals: a goal in plain words → a model's plan → a person's approval → a run.

``add`` records the goal (``planning``), asks the planner and keeps its plan (``proposed``) or
why there is none (``failed``: no planner configured, an HTTP error, a reply that was not a
valid plan twice). ``approve`` takes the goal's plan, or a person's edit of it, makes a session
per task through intake (each checked as ``telecoder run`` would), and writes them as one run of
kind ``plan`` with the tasks' dependencies — in one transaction; the goal is then ``running``
and follows its run to ``done`` or ``failed`` (``store.goals``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import httpx

from telecoder import llmjson
from telecoder.domain import Dependency, NewRun, NewSession, Run, RunKind
from telecoder.errors import BadInput, TeleCoderError
from telecoder.intake import Accepted, Request
from telecoder.planner import Plan, Planner, PlanTask
from telecoder.store import Goal, GoalStatus, Repo, Store

log = logging.getLogger(__name__)

Intake = Callable[[Request], Awaitable[Accepted]]
MAX_TEXT = 20_000
NO_PLANNER = (
    "no planner model is configured (TELECODER_PLANNER_MODEL): approve it with a plan file, "
    "telecoder goals approve ID --edit plan.yaml"
)


async def add(
    store: Store,
    planner: Planner | None,
    text: str,
    *,
    repo: str | None = None,
    origin: dict[str, object] | None = None,
    user: str | None = None,
) -> Goal:
    """A new goal, planned: ``proposed`` with its plan, or ``failed`` saying why."""
    text = text.strip()
    if not text:
        raise BadInput("a goal needs some text")
    if len(text) > MAX_TEXT:
        raise BadInput(f"a goal is at most {MAX_TEXT} characters")
    origin = dict(origin or {}) or None
    goal = await store.goals.create(text, repo=repo, origin=origin, user=user)
    return await plan(store, planner, goal)


async def plan(store: Store, planner: Planner | None, goal: Goal) -> Goal:
    """Ask the planner for ``goal``'s plan (a ``planning`` goal)."""
    if planner is None:
        return await store.goals.fail(goal.id, NO_PLANNER)
    repos = await store.repos.list()
    try:
        found = await planner.plan(goal.text, repos, goal.repo)
    except llmjson.InvalidReply as e:
        return await store.goals.fail(
            goal.id, f"the planner's reply was not a valid plan: {e.error}"
        )
    except (httpx.HTTPError, ValueError) as e:
        reason = f"the planner failed: {type(e).__name__}: {e}"[:500]
        log.warning("goal %s: %s", goal.id, reason)
        return await store.goals.fail(goal.id, reason)
    return await store.goals.propose(goal.id, found.to_dict())


async def approve(
    store: Store, intake: Intake, goal_id: str, edited: Plan | None = None
) -> tuple[Goal, Run]:
    """Turn the goal's plan (or ``edited``) into a run; Conflict when it is not waiting for
    approval, BadInput (the goal back to ``proposed``, saying why) when a task is refused."""
    goal = await store.goals.approve(goal_id, edited.to_dict() if edited is not None else None)
    try:
        if goal.plan is None:
            raise BadInput(f"goal {goal_id} has no plan: approve it with --edit plan.yaml")
        chosen = Plan.model_validate(goal.plan)
        new, deps = await _sessions(store, intake, goal, chosen)
        spec = {"goal": goal.id, "plan": chosen.to_dict()}
        run, _ = await store.runs.create(
            NewRun(kind=RunKind.PLAN, name=_name(goal.text), spec=spec, user=goal.user), new, deps
        )
    except TeleCoderError as e:
        await store.goals.unapprove(goal_id, e.message)
        raise
    return await store.goals.started(goal_id, run.id), run


async def _sessions(
    store: Store, intake: Intake, goal: Goal, plan: Plan
) -> tuple[list[NewSession], list[Dependency]]:
    registered = {r.name: r for r in await store.repos.list()}

    async def one(task: PlanTask) -> NewSession:
        request = _request(task, goal, registered)
        try:
            accepted = await intake(request)
        except TeleCoderError as e:
            e.args = (f"task {task.id}: {e.message}", *e.args[1:])
            raise
        return dataclasses.replace(accepted.session, task_key=task.id)

    new = list(await asyncio.gather(*(one(t) for t in plan.tasks)))
    ids = {t.id: s.id for t, s in zip(plan.tasks, new, strict=True)}
    deps = [
        Dependency(session_id=ids[task.id], depends_on=ids[first])
        for task in plan.tasks
        for first in task.depends_on
    ]
    return new, deps


def _request(task: PlanTask, goal: Goal, registered: dict[str, Repo]) -> Request:
    """The session request of a task: a registered repository's URL, engine and priority,
    or the repository as given."""
    name = task.repo or goal.repo
    if name is None:
        raise BadInput(f"task {task.id} names no repository and the goal has none")
    prompt = task.prompt.strip()
    if task.acceptance.strip():
        prompt += f"\n\nAcceptance: {task.acceptance.strip()}"
    repo = registered.get(name)
    if repo is None:
        if task.repo is not None and task.repo != goal.repo and "/" not in name:
            raise BadInput(f"task {task.id}: no repository is registered as {name!r}")
        return Request(repo=name, prompt=prompt, engine=task.engine, user=goal.user)
    return Request(
        repo=repo.url,
        prompt=prompt,
        engine=task.engine or repo.engine,
        priority=repo.priority,
        user=goal.user,  # the goal's sessions and run are its owner's
    )


def _name(text: str) -> str:
    first = " ".join(text.split())
    return first if len(first) <= 80 else first[:79] + "…"


def summary(goal: Goal) -> str:
    """A goal's plan in a few lines, with how to approve it (for a channel's thread)."""
    if goal.status != GoalStatus.PROPOSED or not goal.plan:
        return f"I could not plan the goal {goal.id}: {goal.error or goal.status.value}."
    tasks = goal.plan.get("tasks") or []
    lines = [f"Goal {goal.id}: a plan of {len(tasks)} task(s).", ""]
    for task in tasks[:20]:
        after = ", ".join(task.get("depends_on") or [])
        prompt = " ".join(str(task.get("prompt") or "").split())
        clipped = prompt if len(prompt) <= 120 else prompt[:119] + "…"
        waits = f" after {after}" if after else ""
        lines.append(f"- {task.get('id')} ({task.get('repo')}){waits}: {clipped}")
    lines += ["", f"Approve it with `telecoder goals approve {goal.id}` (or on the dashboard)."]
    return "\n".join(lines)
