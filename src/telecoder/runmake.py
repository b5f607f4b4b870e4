"""Making runs: a task over many repositories, a plan's tasks, a task after another.

The CLI (local store mode) and the API (``POST /api/runs``) both come here, so a run is made
the same way wherever it is asked for: every session is checked by intake first (at once,
``fanout.sessions_for``) and either the whole run is written in one transaction or, at the
first refusal (which names its repository or task), nothing is.

``after`` puts a new session into the run of the session it waits for — a dependency never
crosses runs — making a run of kind ``single`` for that session when it has none
(``store.runs.join``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from telecoder import fanout
from telecoder.domain import Dependency, Run, RunKind, Session
from telecoder.errors import TeleCoderError
from telecoder.intake import Accepted, Request
from telecoder.plans import Plan
from telecoder.runs import run_json
from telecoder.store import Store


@dataclass(frozen=True, slots=True)
class Made:
    run: Run
    sessions: list[Session]
    deps: list[Dependency]
    warnings: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # the sessions this call made

    def to_dict(self) -> dict[str, Any]:
        return run_json(self.run, self.sessions, self.deps)


async def fan_out(
    store: Store,
    intake: fanout.Intake,
    request: Request,
    repos: Sequence[str],
    *,
    name: str | None = None,
) -> Made:
    """One session per repository (``task_key``: the repository as given), one run."""
    repos = list(dict.fromkeys(r.strip() for r in repos if r.strip()))  # each once, in order
    new, warnings = await fanout.sessions_for(intake, request, repos)
    run, sessions = await fanout.create(
        store, new, kind=RunKind.FANOUT, name=name, spec={"repos": repos}
    )
    return Made(run, sessions, [], warnings, [s.id for s in sessions])


async def from_plan(store: Store, intake: fanout.Intake, request: Request, plan: Plan) -> Made:
    """A run of kind ``plan``: a session per task (``task_key``: its id), with the tasks'
    dependencies. ``request`` gives what a task and the plan leave out (repo, engine, …)."""
    gate = asyncio.Semaphore(fanout.CONCURRENCY)

    async def one(index: int) -> Accepted:
        task = plan.tasks[index]
        asked = dataclasses.replace(
            request,
            repo=task.repo or plan.repo or request.repo,
            prompt=task.prompt,
            engine=task.engine or plan.engine or request.engine,
            model=task.model or request.model,
            base=task.base or request.base,
        )
        async with gate:
            try:
                return await intake(asked)
            except TeleCoderError as e:
                e.args = (f"task {task.id!r}: {e.message}", *e.args[1:])
                raise

    results = await asyncio.gather(
        *(one(i) for i in range(len(plan.tasks))), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result  # the first refusal in the plan's order (all checks ended)
    accepted: list[Accepted] = [r for r in results if isinstance(r, Accepted)]
    new = [
        dataclasses.replace(a.session, task_key=task.id)
        for a, task in zip(accepted, plan.tasks, strict=True)
    ]
    ids = {task.id: s.id for task, s in zip(plan.tasks, new, strict=True)}
    deps = [
        Dependency(session_id=ids[task.id], depends_on=ids[other], after=how)
        for task in plan.tasks
        for other, how in task.waits()
    ]
    warnings = [
        f"task {task.id!r}: {w}"
        for a, task in zip(accepted, plan.tasks, strict=True)
        for w in a.warnings
    ]
    spec: dict[str, object] = {"plan": plan.model_dump(exclude_none=True)}
    run, sessions = await fanout.create(
        store, new, kind=RunKind.PLAN, name=plan.name, deps=deps, spec=spec
    )
    deps = await store.runs.dependencies(run.id)
    return Made(run, sessions, deps, warnings, [s.id for s in sessions])


async def after(store: Store, intake: fanout.Intake, request: Request, ref: str) -> Made:
    """A session that starts once the session ``ref`` (an id or a unique prefix) succeeded."""
    anchor = await store.sessions.resolve(ref)
    accepted = await intake(request)
    run = await store.runs.join(accepted.session, anchor.id)
    sessions = await store.runs.sessions(run.id)
    deps = await store.runs.dependencies(run.id)
    return Made(run, sessions, deps, accepted.warnings, [accepted.session.id])


async def made(store: Store, run_id: str) -> Made:
    """The run as it is now."""
    run = await store.runs.get(run_id)
    sessions = await store.runs.sessions(run_id)
    return Made(run, sessions, await store.runs.dependencies(run_id))
