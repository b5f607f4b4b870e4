"""One task over many repositories: a request per repository, checked at once, as one run.

``sessions_for`` runs intake for every repository concurrently (each asks git about its
remote), so submitting 100 repositories costs about as long as the slowest check, and either
all are accepted or the first refusal is raised (naming the repository) and nothing is queued.
``create`` then writes the run and all its sessions in one transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from telecoder.domain import Dependency, NewRun, NewSession, Run, RunKind, Session
from telecoder.errors import BadInput, TeleCoderError
from telecoder.intake import Accepted, Request
from telecoder.store import Store

Intake = Callable[[Request], Awaitable[Accepted]]
CONCURRENCY = 32  # intake checks at once (each may run git ls-remote)


async def sessions_for(
    intake: Intake, request: Request, repos: Sequence[str]
) -> tuple[list[NewSession], list[str]]:
    """``request`` once per repository: the sessions (``task_key`` = the repository as given)
    and the warnings; the first refusal is raised, naming its repository."""
    if not repos:
        raise BadInput("name at least one repository")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(repo: str) -> Accepted:
        async with gate:
            try:
                return await intake(dataclasses.replace(request, repo=repo))
            except TeleCoderError as e:
                e.args = (f"{repo}: {e.message}", *e.args[1:])
                raise

    # Every check runs to its end (a git subprocess left pending when the first refusal is
    # raised hangs the event loop's shutdown); then the first refusal in the given order.
    results = await asyncio.gather(*(one(repo) for repo in repos), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    accepted = [r for r in results if isinstance(r, Accepted)]
    sessions = [
        dataclasses.replace(a.session, task_key=repo)
        for a, repo in zip(accepted, repos, strict=True)
    ]
    warnings = [f"{repo}: {w}" for a, repo in zip(accepted, repos, strict=True) for w in a.warnings]
    return sessions, warnings


async def create(
    store: Store,
    sessions: Sequence[NewSession],
    *,
    kind: RunKind = RunKind.FANOUT,
    name: str | None = None,
    deps: Sequence[Dependency] = (),
    spec: dict[str, object] | None = None,
    job: str | None = None,
) -> tuple[Run, list[Session]]:
    run = NewRun(kind=kind, name=name, spec=dict(spec or {}), job=job)
    return await store.runs.create(run, sessions, deps)
