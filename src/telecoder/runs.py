"""Runs as their readers and their operators see them: cancel one, retry what failed in it,
and the summary (counts per status, cost, tokens, wall time, pull requests) that ``runs show``,
``GET /api/runs/{id}`` and the dashboard's run page all print from ``run_json``.

Creating runs is ``fanout`` (and the plans built on it); the store keeps the graph settled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from telecoder.domain import Dependency, Run, Session, SessionStatus
from telecoder.errors import Conflict
from telecoder.store import Store

# Cancelled first: what waits (so it ends cancelled, not skipped), then what has not started
# or waits for a person, then what runs (flagged: its worker stops it).
_CANCEL_ORDER = {
    SessionStatus.WAITING: 0,
    SessionStatus.QUEUED: 1,
    SessionStatus.BLOCKED: 1,
    SessionStatus.RUNNING: 2,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    sessions: int
    statuses: dict[str, int]  # status -> how many, only those present
    cost_usd: float
    input_tokens: int
    output_tokens: int
    wall_seconds: float  # created to finished, or to now while it runs
    pr_urls: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "statuses": dict(self.statuses),
            "cost_usd": round(self.cost_usd, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "wall_seconds": round(self.wall_seconds, 3),
            "pr_urls": list(self.pr_urls),
        }


def summary(run: Run, sessions: Sequence[Session], *, now: float | None = None) -> Summary:
    counts = Counter(s.status.value for s in sessions)
    order = [status.value for status in SessionStatus]
    end = run.finished_at if run.finished_at is not None else (now or time.time())
    return Summary(
        sessions=len(sessions),
        statuses={status: counts[status] for status in order if counts[status]},
        cost_usd=sum(s.cost_usd for s in sessions),
        input_tokens=sum(s.input_tokens for s in sessions),
        output_tokens=sum(s.output_tokens for s in sessions),
        wall_seconds=max(0.0, end - run.created_at),
        pr_urls=[url for s in sessions if (url := pr_url(s))],
    )


def pr_url(session: Session) -> str | None:
    return session.result.pr_url if session.result is not None else None


def depends_on(deps: Sequence[Dependency]) -> dict[str, list[str]]:
    """Each session's dependencies (ids)."""
    found: dict[str, list[str]] = {}
    for dep in deps:
        found.setdefault(dep.session_id, []).append(dep.depends_on)
    return found


def run_json(
    run: Run, sessions: Sequence[Session], deps: Sequence[Dependency], *, now: float | None = None
) -> dict[str, Any]:
    """The run as ``runs show --json`` and ``GET /api/runs/{id}`` print it."""
    order = {s.id: i for i, s in enumerate(sessions)}
    waits = {k: sorted(v, key=lambda i: order.get(i, -1)) for k, v in depends_on(deps).items()}
    deps = sorted(deps, key=lambda d: (order.get(d.session_id, -1), order.get(d.depends_on, -1)))
    totals = summary(run, sessions, now=now).to_dict()
    return {
        **run.to_dict(),
        "counts": totals["statuses"],
        "totals": totals,
        "sessions": [
            {**s.to_dict(), "pr_url": pr_url(s), "depends_on": waits.get(s.id, [])}
            for s in sessions
        ],
        "deps": [
            {"session_id": d.session_id, "depends_on": d.depends_on, "after": d.after.value}
            for d in deps
        ],
    }


async def load(store: Store, run_id: str) -> dict[str, Any]:
    """``run_json`` of the run in the store (``SessionNotFound`` for an unknown run)."""
    run = await store.runs.get(run_id)
    return run_json(run, await store.runs.sessions(run_id), await store.runs.dependencies(run_id))


async def cancel_run(store: Store, run_id: str) -> tuple[Run, list[Session]]:
    """Cancel every session of the run that has not ended: waiting, queued and blocked ones
    at once, running ones flagged for their workers to stop. The run ends ``cancelled`` when
    the last of them has ended (the store settles it). Returns the run and the sessions
    cancelled or flagged; ``Conflict`` when every session had already ended."""
    run = await store.runs.get(run_id)
    sessions = await store.runs.sessions(run_id)
    found = [s for s in sessions if not s.status.terminal]
    if not found:
        raise Conflict(f"run {run_id} is already {run.status.value}")
    # The deepest first, so a dependant ends cancelled before what it waits for skips it.
    depth = {
        n.session.id: n.layer
        for c in layers(sessions, await store.runs.dependencies(run_id))
        for n in c
    }
    found.sort(key=lambda s: (_CANCEL_ORDER.get(s.status, 1), -depth.get(s.id, 0)))
    touched: list[Session] = []
    for session in found:
        try:
            touched.append(await store.sessions.cancel(session.id))
        except Conflict:
            continue  # it ended meanwhile (skipped by an earlier cancel, or finished)
    return await store.runs.get(run_id), touched


async def retry_failed(store: Store, run_id: str) -> tuple[Run, list[Session]]:
    """Every failed, dead or cancelled session of the run gets a new attempt and every
    skipped one waits again (one transaction, ``store.runs.retry_failed``); the run is
    ``running`` again. ``Conflict`` when nothing in it failed."""
    return await store.runs.retry_failed(run_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    session: Session
    layer: int  # the longest path of dependencies before it
    row: int  # its place within its layer


def layers(sessions: Sequence[Session], deps: Sequence[Dependency]) -> list[list[Node]]:
    """The graph in layers, for drawing: a session sits one layer right of the deepest one it
    depends on; within a layer, in the run's order."""
    waits = depends_on(deps)
    known = {s.id for s in sessions}
    depth: dict[str, int] = {}

    def layer_of(session_id: str, seen: frozenset[str] = frozenset()) -> int:
        if session_id in depth:
            return depth[session_id]
        before = [d for d in waits.get(session_id, []) if d in known and d not in seen]
        found = 1 + max((layer_of(d, seen | {session_id}) for d in before), default=-1)
        depth[session_id] = found
        return found

    grouped: list[list[Node]] = []
    for session in sessions:
        at = layer_of(session.id)
        while len(grouped) <= at:
            grouped.append([])
        grouped[at].append(Node(session=session, layer=at, row=len(grouped[at])))
    return grouped
