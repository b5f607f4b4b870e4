"""One look at an installation: what ``telecoder status`` and ``GET /api/status`` show.

The queue (sessions per status), the live workers, the model endpoints, whether the sandbox can
start on this host, and the last failed sessions with why. Read from the store; nothing is
changed. Failure reasons are the sessions' stored errors, which are masked when recorded.
"""

from __future__ import annotations

from typing import Any

from telecoder.domain import SessionStatus
from telecoder.gateway.endpoints import env_specs, listing
from telecoder.runtimes.sandbox import unavailable
from telecoder.settings import Settings
from telecoder.store import Store

RECENT_FAILURES = 5
REASON_CHARS = 300


async def snapshot(store: Store, settings: Settings, *, user: str | None = None) -> dict[str, Any]:
    """``user``: the recent failures are that user's only (a member's view; the counts are
    everyone's)."""
    counts = await store.sessions.counts()
    queue = {status.value: counts.get(status.value, 0) for status in SessionStatus}
    live = await store.workers.list(include_offline=False)
    failed = (
        await store.sessions.list(status=SessionStatus.FAILED, limit=RECENT_FAILURES, user=user)
    ).sessions
    endpoints = [e.to_dict() for e in await listing(store, env_specs())]
    runtime = settings.runtime
    problem = unavailable(settings.sandbox_bwrap) if runtime == "sandbox" else None
    pause = await store.control.pause_state()
    return {
        "queue": queue,
        "claims": pause.to_dict(),
        "workers": {
            "live": len(live),
            "slots": sum(w.capacity for w in live),
            "running": sum(w.running for w in live),
            "list": [w.to_dict() for w in live],
        },
        "sandbox": {
            "runtime": runtime,
            "status": "unsafe" if runtime == "local" else "unavailable" if problem else "ok",
            "problem": problem,
        },
        "endpoints": [
            {k: e[k] for k in ("name", "kind", "source", "healthy", "latency_ms", "error")}
            for e in endpoints
        ],
        "recent_failures": [
            {
                "id": s.id,
                "repo": s.repo,
                "failure_kind": s.failure_kind.value if s.failure_kind else None,
                "reason": _reason(s.error),
                "finished_at": s.finished_at,
            }
            for s in failed
        ],
    }


def _reason(error: str | None) -> str | None:
    if not error:
        return None
    line = " ".join(error.split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"
