"""Where a session's next turn may run: on the worker that keeps its workspace, while it lives.

A chat keeps its worktree and its agent's session between turns on the host that ran its last
turn; so does a task that stopped blocked (it asked a question, or reached its budget) for the
turn that answers it or goes on after a raise. A local worker records that worktree's path on
the attempt (``attempts.workspace_path``), and any worker of that host can reopen it. A remote
worker (``telecoder worker --server``) keeps the path to itself: an attempt the server has
without one ran on another host. So the next turn of a session whose last attempt has no
workspace path, and is continued (a chat's, or one that ended well: a blocked task's; a crash or
a failure starts afresh anywhere), is claimed only by the worker that ran it, while that worker
lives (not ``offline``, its heartbeat younger than a lease); once it is gone, any worker may
claim it, and a remote one that does not have the workspace ends the turn at once, saying so
(``remote_chats``), as a local worker does for a worktree that is gone. ``Kept`` tells a host
which of the workspaces it keeps are no longer wanted (the session ended while it waited).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import exists, or_, select

from telecoder.domain import AttemptStatus, Mode, SessionStatus, WorkerState
from telecoder.store.db import Database
from telecoder.store.schema import attempts, sessions, workers


def not_held_elsewhere(worker_id: str, now: float, stale_after: float) -> Any:
    """A SQL condition (for the claim's WHERE clause, over ``sessions``): false for a session
    whose next turn continues a last turn that ran on another worker that keeps its workspace
    to itself and lives."""
    holder = (
        select(attempts.c.session_id)
        .select_from(attempts.join(workers, workers.c.id == attempts.c.worker_id))
        .where(
            attempts.c.session_id == sessions.c.id,
            attempts.c.number == sessions.c.attempt,
            attempts.c.workspace_path.is_(None),
            attempts.c.worker_id != worker_id,
            or_(
                sessions.c.mode == Mode.CHAT.value,
                attempts.c.status == AttemptStatus.SUCCEEDED.value,  # blocked: continued
            ),
            workers.c.state != WorkerState.OFFLINE.value,
            workers.c.last_heartbeat >= now - stale_after,
        )
    )
    return ~exists(holder)


class Kept:
    """What a remote host keeps a workspace for: the sessions it still may continue."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def gone(self, worker_id: str, session_ids: Collection[str]) -> list[str]:
        """Of ``session_ids`` (kept by ``worker_id``), those it no longer may continue: ended
        (idle, cancelled), unknown, or taken up by another worker. Sorted."""
        ids = sorted(set(session_ids))
        if not ids:
            return []
        async with self._db.read() as conn:
            last = attempts.c.session_id == sessions.c.id
            rows = await conn.execute(
                select(sessions.c.id)
                .select_from(
                    sessions.join(attempts, last & (attempts.c.number == sessions.c.attempt))
                )
                .where(
                    sessions.c.id.in_(ids),
                    attempts.c.worker_id == worker_id,
                    sessions.c.status.not_in([s.value for s in SessionStatus if s.terminal]),
                )
            )
            live = {r.id for r in rows}
        return [sid for sid in ids if sid not in live]
