"""A run as JSON: the one shape of ``run --detach --json``, ``runs show --json`` and the API.

``run_json(run, sessions, deps)`` is the run's own fields (``Run.to_dict``: ``id``, ``kind``,
``name``, ``status``, ``spec``, ``job``, times), then ``sessions`` — each session's full JSON
(``Session.to_dict``: ``id``, ``task_key``, ``repo``, ``status``, ``branch``, ``result``, …)
with ``depends_on``: ``[{"id", "after"}]`` (``after``: ``after`` or ``after_any``) — and the
run's ``counts`` (sessions by status) and ``totals`` (``cost_usd``, tokens, ``seconds`` of
the sessions' running time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from telecoder.domain import Dependency, Run, Session


def run_json(run: Run, sessions: Sequence[Session], deps: Sequence[Dependency]) -> dict[str, Any]:
    waits: dict[str, list[dict[str, str]]] = {}
    for dep in deps:
        waits.setdefault(dep.session_id, []).append(
            {"id": dep.depends_on, "after": dep.after.value}
        )
    counts = Counter(s.status.value for s in sessions)
    seconds = sum((s.finished_at or s.updated_at) - s.started_at for s in sessions if s.started_at)
    return {
        **run.to_dict(),
        "counts": dict(sorted(counts.items())),
        "totals": {
            "sessions": len(sessions),
            "cost_usd": round(sum(s.cost_usd for s in sessions), 6),
            "input_tokens": sum(s.input_tokens for s in sessions),
            "output_tokens": sum(s.output_tokens for s in sessions),
            "seconds": round(seconds, 3),
        },
        "sessions": [{**s.to_dict(), "depends_on": waits.get(s.id, [])} for s in sessions],
    }
