"""Goals in the store: a goal in plain words, the plan a model made of it, the run it became.

A goal is ``planning`` while a model decomposes it, then ``proposed`` with its plan (or
``failed`` with the reason the plan could not be had). A person approves it: ``approved`` while
its run is being made (so two approvals cannot make two runs), then ``running`` with the run's
id. A running goal is ``done`` or ``failed`` when its run ended — derived from the run's status
on every read, so nothing has to follow the run. ``dropped`` is a person's no.
"""

from __future__ import annotations

import builtins
import enum
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, select, update

from telecoder.domain import RunStatus, iso
from telecoder.errors import Conflict, GoalNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import goals, runs

_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"


def new_goal_id() -> str:
    return "goal_" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


class GoalStatus(enum.StrEnum):
    PLANNING = "planning"  # a model is making its plan
    PROPOSED = "proposed"  # the plan waits for a person's approval
    APPROVED = "approved"  # approved: its run is being made
    RUNNING = "running"  # its run runs
    DONE = "done"  # its run succeeded
    FAILED = "failed"  # no plan could be made, or its run failed
    DROPPED = "dropped"  # a person said no


# From where a goal may be approved (with a plan given, also from where planning failed).
APPROVABLE = (GoalStatus.PROPOSED,)
REPLANNABLE = (GoalStatus.PLANNING, GoalStatus.PROPOSED, GoalStatus.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Goal:
    id: str
    text: str
    status: GoalStatus
    plan: dict[str, Any] | None
    repo: str | None
    run_id: str | None
    run_status: str | None
    error: str | None
    origin: dict[str, Any] | None
    created_at: float
    updated_at: float
    user: str | None = None  # who added it (a member sees their own); its run is theirs

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "status": self.status.value,
            "plan": self.plan,
            "repo": self.repo,
            "run_id": self.run_id,
            "run_status": self.run_status,
            "error": self.error,
            "origin": self.origin,
            "user": self.user,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def _status(stored: str, run_status: str | None) -> GoalStatus:
    if stored == GoalStatus.RUNNING.value and run_status is not None:
        if run_status == RunStatus.SUCCEEDED.value:
            return GoalStatus.DONE
        if run_status in (RunStatus.FAILED.value, RunStatus.CANCELLED.value):
            return GoalStatus.FAILED
    return GoalStatus(stored)


def _goal(row: Row[Any]) -> Goal:
    m = row._mapping
    return Goal(
        id=m["id"],
        text=m["text"],
        status=_status(m["status"], m["run_status"]),
        plan=loads(m["plan"]),
        repo=m["repo"],
        run_id=m["run_id"],
        run_status=m["run_status"],
        error=m["error"],
        origin=loads(m["origin"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        user=m["user"],
    )


_SELECT = select(goals, runs.c.status.label("run_status")).outerjoin(
    runs, runs.c.id == goals.c.run_id
)


class Goals:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        text: str,
        *,
        repo: str | None = None,
        origin: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> Goal:
        """A new goal, ``planning``."""
        now = time.time()
        goal_id = new_goal_id()
        async with self._db.write() as conn:
            await conn.execute(
                insert(goals).values(
                    id=goal_id,
                    text=text,
                    status=GoalStatus.PLANNING.value,
                    repo=repo,
                    origin=dumps(origin) if origin is not None else None,
                    user=user,
                    created_at=now,
                    updated_at=now,
                )
            )
        return await self.get(goal_id)

    async def get(self, goal_id: str) -> Goal:
        async with self._db.read() as conn:
            row = (await conn.execute(_SELECT.where(goals.c.id == goal_id))).first()
        if row is None:
            raise GoalNotFound(f"no goal {goal_id!r}")
        return _goal(row)

    async def list(self, *, limit: int = 50, user: str | None = None) -> builtins.list[Goal]:
        """Newest first; ``user``: only the goals that user added (a member's list)."""
        query = _SELECT.order_by(goals.c.created_at.desc(), goals.c.id).limit(limit)
        if user is not None:
            query = query.where(goals.c.user == user)
        async with self._db.read() as conn:
            return [_goal(r) for r in (await conn.execute(query)).all()]

    async def propose(self, goal_id: str, plan: dict[str, Any]) -> Goal:
        """The model's plan, waiting for approval."""
        values = {"plan": dumps(plan), "error": None, "status": GoalStatus.PROPOSED.value}
        return await self._move(goal_id, (GoalStatus.PLANNING,), values)

    async def fail(self, goal_id: str, error: str) -> Goal:
        """No plan could be made: the goal says why."""
        values = {"error": error[:2000], "status": GoalStatus.FAILED.value}
        return await self._move(goal_id, (GoalStatus.PLANNING,), values)

    async def approve(self, goal_id: str, plan: dict[str, Any] | None = None) -> Goal:
        """Take the goal for approval (``approved``): its own plan, or ``plan`` (an edited one,
        also for a goal whose planning failed). Conflict when it is past that."""
        if plan is None:
            return await self._move(goal_id, APPROVABLE, {"status": GoalStatus.APPROVED.value})
        values = {"plan": dumps(plan), "error": None, "status": GoalStatus.APPROVED.value}
        return await self._move(goal_id, REPLANNABLE, values)

    async def started(self, goal_id: str, run_id: str) -> Goal:
        values = {"run_id": run_id, "status": GoalStatus.RUNNING.value}
        return await self._move(goal_id, (GoalStatus.APPROVED,), values)

    async def unapprove(self, goal_id: str, error: str) -> Goal:
        """Its run could not be made: back to ``proposed``, saying why."""
        values = {"error": error[:2000], "status": GoalStatus.PROPOSED.value}
        return await self._move(goal_id, (GoalStatus.APPROVED,), values)

    async def drop(self, goal_id: str) -> Goal:
        """A person's no; Conflict for a goal whose run was made (cancel the run instead)."""
        allowed = (*REPLANNABLE, GoalStatus.DROPPED)
        return await self._move(goal_id, allowed, {"status": GoalStatus.DROPPED.value})

    async def _move(
        self, goal_id: str, allowed: Collection[GoalStatus], values: dict[str, Any]
    ) -> Goal:
        now = time.time()
        async with self._db.write() as conn:
            done = await conn.execute(
                update(goals)
                .where(goals.c.id == goal_id, goals.c.status.in_([s.value for s in allowed]))
                .values(**values, updated_at=now)
            )
        if done.rowcount == 0:
            goal = await self.get(goal_id)  # GoalNotFound
            wanted = values["status"]
            raise Conflict(f"goal {goal_id} is {goal.status.value}: it cannot become {wanted}")
        return await self.get(goal_id)
