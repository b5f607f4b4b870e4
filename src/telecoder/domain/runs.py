"""Runs (sessions that belong together) and an orch run's tasks."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from telecoder.domain.sessions import _ID_ALPHABET, iso

# --- runs ----------------------------------------------------------------------------------------


def new_run_id() -> str:
    return "run_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


class RunStatus(enum.StrEnum):
    RUNNING = "running"  # some session has not ended
    SUCCEEDED = "succeeded"  # every session succeeded
    FAILED = "failed"  # every session ended, some not well (failed, dead, skipped)
    CANCELLED = "cancelled"


class RunKind(enum.StrEnum):
    FANOUT = "fanout"  # one task over many repositories
    PLAN = "plan"  # tasks with dependencies (a plan file, a goal)
    JOB = "job"  # a cron job's firing
    BEST_OF = "best_of"  # N candidates of one task, one winner
    SINGLE = "single"  # one session (--after)
    ORCH = "orch"  # a leader's tasks, dispatched one by one (``telecoder orch``)
    COUNCIL = "council"  # reviewers of one target, their recommendations tallied


class After(enum.StrEnum):
    """How a session waits for one it depends on."""

    SUCCESS = "after"  # runs only if that one succeeded; skipped otherwise
    ANY = "after_any"  # runs once that one ended, however


@dataclass(frozen=True, slots=True, kw_only=True)
class Dependency:
    session_id: str
    depends_on: str
    after: After = After.SUCCESS


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    kind: RunKind
    name: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # what made it: the plan, N, the job
    job: str | None = None
    id: str = field(default_factory=new_run_id)
    user: str | None = None  # its owner; None: its sessions' user (``Runs.create``)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    kind: RunKind
    name: str | None
    status: RunStatus
    spec: dict[str, Any]
    job: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    user: str | None = None  # whose it is: a member sees and acts on their own runs only

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "name": self.name,
            "status": self.status.value,
            "spec": self.spec,
            "job": self.job,
            "user": self.user,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "finished_at": iso(self.finished_at),
        }


# --- orch: a leader's tasks in an orch run ------------------------------------------------------


class TaskStatus(enum.StrEnum):
    """A leader's task (``telecoder orch``). ``ready`` is never stored: a pending task whose
    dependencies all succeeded reads ``ready``."""

    PENDING = "pending"
    READY = "ready"
    DISPATCHED = "dispatched"  # its session is queued
    RUNNING = "running"
    BLOCKED = "blocked"  # a question to the leader is open
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)

    @property
    def in_flight(self) -> bool:
        return self in (TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.BLOCKED)


class TaskMode(enum.StrEnum):
    CODE = "code"  # changes code: a branch (strict runs pin a clean base)
    ANSWER = "answer"  # answers a question: no change expected


def orch_thread(run_id: str, key: str) -> str:
    """The inbox thread of a task: its dispatch, its agent's questions and the answers."""
    return f"orch:{run_id}:{key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskAttempt:
    """One dispatch of a task: one session, in its own worktree and branch."""

    number: int
    session_id: str
    status: TaskStatus
    assignee: str
    engine: str
    worktree: str
    branch: str
    base_ref: str | None
    message_id: int | None
    created_at: float
    updated_at: float
    cleaned_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "session_id": self.session_id,
            "status": self.status.value,
            "assignee": self.assignee,
            "engine": self.engine,
            "worktree": self.worktree,
            "branch": self.branch,
            "base_ref": self.base_ref,
            "message_id": self.message_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "cleaned_at": iso(self.cleaned_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    run_id: str
    key: str
    prompt: str
    repo: str
    engine: str | None
    acceptance: str | None
    base: str | None
    mode: TaskMode
    assignee: str | None
    status: TaskStatus  # ``ready`` derived from the dependencies
    attempt: int
    session_id: str | None
    depends_on: tuple[str, ...]
    attempts: tuple[TaskAttempt, ...]
    created_at: float
    updated_at: float

    @property
    def thread(self) -> str:
        return orch_thread(self.run_id, self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "key": self.key,
            "status": self.status.value,
            "prompt": self.prompt,
            "repo": self.repo,
            "engine": self.engine,
            "acceptance": self.acceptance,
            "base": self.base,
            "mode": self.mode.value,
            "assignee": self.assignee,
            "depends_on": list(self.depends_on),
            "attempt": self.attempt,
            "session_id": self.session_id,
            "thread": self.thread,
            "attempts": [a.to_dict() for a in self.attempts],
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEvent:
    id: int
    run_id: str
    task: str
    kind: str  # added, dependency, dispatched, status, ready, answered, reassigned, cleaned
    data: dict[str, Any]
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "task": self.task,
            "kind": self.kind,
            "data": self.data,
            "at": iso(self.created_at),
        }
