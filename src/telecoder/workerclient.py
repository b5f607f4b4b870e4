"""The remote-worker wire protocol, client side: the calls ``telecoder worker --server URL``
makes with its ``worker`` token (``server/routes/remote_workers.py`` answers them).

Each call maps an error answer as :class:`~telecoder.client.Client` does: a lost lease is
``LeaseLost`` (409 ``lease_lost``), a refused token ``Unauthorized``, no answer
``ServerUnavailable``. The token travels in the ``Authorization`` header only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from telecoder.client import Client, Json
from telecoder.domain import HostStats, Lease, NewEvent, Run, RunKind, RunStatus, WorkerState
from telecoder.errors import WorkerNotFound
from telecoder.store import Outcome, UsageRow


@dataclass(frozen=True, slots=True)
class Held:
    """A lease as the server renewed it."""

    lease_until: float
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Renewal:
    drain: bool  # an operator drained this worker: claim nothing new
    held: dict[str, Held]  # by session id; a lease missing here is lost


def _stats(stats: HostStats | None) -> Json | None:
    return stats.to_dict() if stats is not None else None


def _lease(lease: Lease) -> Json:
    return {"worker_id": lease.worker_id, "attempt": lease.attempt}


def _usage(row: UsageRow) -> Json:
    data = row.to_dict()
    for name in ("session_id", "attempt"):  # the lease's, on the server
        data.pop(name, None)
    return data


def run_of(found: Json | None) -> Run | None:
    """A claimed session's run, as the claim's answer gives it (``run``: id, kind, name,
    spec); None without one, or of a kind this worker does not know. Not an orch run's: its
    tasks keep their worktrees for a leader on another host (and its inbox is the server's),
    so here such a task is one of no run, cleaned up when it ends."""
    if not found:
        return None
    try:
        kind = RunKind(found["kind"])
    except ValueError:
        return None
    if kind == RunKind.ORCH:
        return None
    now = time.time()
    return Run(
        id=str(found["id"]),
        kind=kind,
        name=found.get("name"),
        status=RunStatus.RUNNING,
        spec=found.get("spec") or {},
        job=None,
        created_at=now,
        updated_at=now,
        finished_at=None,
    )


def event_json(event: NewEvent) -> Json:
    return {"kind": event.kind.value, "data": event.data, "ts": event.ts}


def outcome_json(outcome: Outcome) -> Json:
    return {
        "status": outcome.status.value,
        "result": outcome.result.to_dict() if outcome.result is not None else None,
        "failure_kind": outcome.failure_kind.value if outcome.failure_kind else None,
        "error": outcome.error,
        "retryable": outcome.retryable,
        "pushed_sha": outcome.pushed_sha,
        "cost_usd": outcome.cost_usd,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "exit_code": outcome.exit_code,
        "not_before": outcome.not_before,
        "question": outcome.question,
    }


class WorkerClient(Client):
    """``async with WorkerClient(url, token=…) as api``: a remote worker's calls."""

    async def register(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        capacity: int,
        engines: Sequence[str],
        stats: HostStats | None,
    ) -> Json:
        body = {
            "worker_id": worker_id,
            "host": host,
            "pid": pid,
            "capacity": capacity,
            "engines": list(engines),
            "host_stats": _stats(stats),
        }
        return await self._call("POST", "/api/workers/register", json=body)

    async def claim(self, worker_id: str, engines: Sequence[str] | None) -> Json | None:
        """The claimed session, its lease and run (``{session, lease, lease_until, run}``),
        or None."""
        body: Json = {"worker_id": worker_id, "engines": list(engines) if engines else None}
        found = await self._call("POST", "/api/workers/claim", json=body, missing=WorkerNotFound)
        return found or None

    async def gone(self, worker_id: str, kept: Sequence[str]) -> list[str]:
        """Of the sessions whose workspaces this host keeps, those it may remove."""
        body: Json = {"worker_id": worker_id, "sessions": list(kept)}
        found = await self._call("POST", "/api/workers/kept", json=body, missing=WorkerNotFound)
        return [str(sid) for sid in found.get("gone", [])]

    async def renew(
        self,
        worker_id: str,
        *,
        state: WorkerState,
        running: int,
        stats: HostStats | None,
        leases: Sequence[Lease],
    ) -> Renewal:
        body = {
            "worker_id": worker_id,
            "state": state.value,
            "running": running,
            "host_stats": _stats(stats),
            "leases": [{"session_id": x.session_id, "attempt": x.attempt} for x in leases],
        }
        got = await self._call("POST", "/api/workers/renew", json=body, missing=WorkerNotFound)
        held = {
            sid: Held(float(h["lease_until"]), bool(h["cancel_requested"]))
            for sid, h in got.get("held", {}).items()
        }
        return Renewal(drain=bool(got.get("drain")), held=held)

    async def events(self, lease: Lease, events: Sequence[NewEvent]) -> int:
        """Append the attempt's events (fenced); the session's last event number."""
        body = {"lease": _lease(lease), "events": [event_json(e) for e in events]}
        got = await self._call("POST", self._path(lease, "events"), json=body)
        return int(got["last_seq"])

    async def progress(self, lease: Lease, **fields: Any) -> None:
        """Record what the attempt learnt as it ran (fenced): ``base_sha``, ``branch``,
        ``engine_session_id``, ``follow_ups`` (the rules), ``engine`` (the repository's
        choice), ``budget_usd`` (None too: no budget)."""
        body = {"lease": _lease(lease), **fields}
        await self._call("POST", self._path(lease, "progress"), json=body)

    async def usage(self, lease: Lease, rows: Sequence[UsageRow], *, first: bool) -> int:
        """Add the attempt's metered requests (fenced; ``first``: they start its rows over);
        how many rows the server has for the attempt now."""
        body = {
            "lease": _lease(lease),
            "first": first,
            "rows": [_usage(r) for r in rows],
        }
        got = await self._call("POST", self._path(lease, "usage"), json=body)
        return int(got["rows"])

    async def finish(self, lease: Lease, outcome: Outcome, events: Sequence[NewEvent]) -> Json:
        """End the attempt (fenced); the session as the server now has it."""
        body = {
            "lease": _lease(lease),
            "outcome": outcome_json(outcome),
            "events": [event_json(e) for e in events],
        }
        return await self._call("POST", self._path(lease, "finish"), json=body)

    async def release(self, lease: Lease, reason: str, events: Sequence[NewEvent]) -> bool:
        """Hand the session back to the queue at once (fenced); False if the lease was lost."""
        body: dict[str, Any] = {
            "lease": _lease(lease),
            "reason": reason,
            "events": [event_json(e) for e in events],
        }
        got = await self._call("POST", self._path(lease, "release"), json=body)
        return bool(got.get("released"))

    async def recall(self, lease: Lease, query: str, k: int) -> Json:
        """The memories the attempt's session is given (fenced): ``{repo: [...], user:
        [...]}``, each ``{memory, score, similarity}``, best first."""
        body = {"lease": _lease(lease), "query": query, "k": k}
        return await self._call("POST", self._path(lease, "memories/recall"), json=body)

    async def remember(self, lease: Lease, memory: Json) -> Json:
        """Store the summary of the attempt's ended session (fenced on its last attempt): once
        per session, so a resend stores nothing twice; the memory as the server has it."""
        body = {"lease": _lease(lease), **memory}
        return await self._call("POST", self._path(lease, "memories"), json=body)

    @staticmethod
    def _path(lease: Lease, action: str) -> str:
        return f"/api/workers/{quote(lease.session_id, safe='')}/{action}"
