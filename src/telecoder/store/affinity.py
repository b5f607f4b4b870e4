"""Where a chat's next turn may run: on the worker that keeps its workspace, while it lives.

A chat keeps its worktree and its agent's session between turns on the host that ran its last
turn. A local worker records that worktree's path on the attempt (``attempts.workspace_path``),
and any worker of that host can reopen it. A remote worker (``telecoder worker --server``)
keeps the path to itself: an attempt the server has without one ran on another host. So the
next turn of a chat whose last attempt has no workspace path is claimed only by the worker that
ran it, while that worker lives (not ``offline``, its heartbeat younger than a lease); once it
is gone, any worker may claim it, and a remote one that does not have the workspace ends the
turn at once, saying so (``remote_chats``), as a local worker does for a worktree that is gone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, or_, select

from telecoder.domain import Mode, WorkerState
from telecoder.store.schema import attempts, sessions, workers


def not_held_elsewhere(worker_id: str, now: float, stale_after: float) -> Any:
    """A SQL condition (for the claim's WHERE clause, over ``sessions``): false for a chat
    whose last turn ran on another worker that keeps its workspace to itself and lives."""
    holder = (
        select(attempts.c.session_id)
        .select_from(attempts.join(workers, workers.c.id == attempts.c.worker_id))
        .where(
            attempts.c.session_id == sessions.c.id,
            attempts.c.number == sessions.c.attempt,
            attempts.c.workspace_path.is_(None),
            attempts.c.worker_id != worker_id,
            workers.c.state != WorkerState.OFFLINE.value,
            workers.c.last_heartbeat >= now - stale_after,
        )
    )
    return or_(sessions.c.mode != Mode.CHAT.value, ~exists(holder))
