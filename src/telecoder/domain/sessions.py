"""Sessions, their attempts and leases, workers and events: the records of one task's life."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from telecoder import outcome as outcomes

# Crockford's base32, lower case: no i, l, o, u — easy to read aloud and to type.
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_session_id() -> str:
    """A short random id (50 bits): typed by people, used in branch names."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


class SessionStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    DEAD = "dead"
    WAITING = "waiting"  # in a run: queued once every session it depends on has ended well
    SKIPPED = "skipped"  # in a run: a session it depended on failed, so it never ran

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        SessionStatus.SUCCEEDED,
        SessionStatus.FAILED,
        SessionStatus.CANCELLED,
        SessionStatus.DEAD,
        SessionStatus.SKIPPED,
    }
)
TERMINAL_STATUSES: frozenset[SessionStatus] = _TERMINAL


class AttemptStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    RELEASED = "released"  # handed back at a graceful shutdown; does not count as a try


class Mode(enum.StrEnum):
    TASK = "task"
    CHAT = "chat"


class EngineSource(enum.StrEnum):
    """Where a session's engine came from, highest precedence first."""

    REQUEST = "request"  # named by the task (--engine, the API's engine)
    REPO = "repo"  # the repository's .telecoder.yml, read when the session ran
    SETTINGS = "settings"  # TELECODER_ENGINE; a repository's .telecoder.yml may override it


class FailureKind(enum.StrEnum):
    """Why an attempt ended badly. The retry policy decides from this alone."""

    TIMEOUT = "timeout"
    STALLED = "stalled"
    WORKER_LOST = "worker_lost"
    ENGINE_ERROR = "engine_error"
    MODEL_ERROR = "model_error"
    SETUP_FAILED = "setup_failed"
    VERIFY_FAILED = "verify_failed"
    CANCELLED = "cancelled"
    BAD_INPUT = "bad_input"
    WORKSPACE_ERROR = "workspace_error"
    PUBLISH_ERROR = "publish_error"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    WORKTREE_TOO_LARGE = "worktree_too_large"  # the agent wrote past the worktree's cap
    SECRET_DETECTED = "secret_detected"  # the diff holds a secret: nothing is pushed
    REVIEW_BLOCKED = "review_blocked"  # reviewers' findings still block: nothing is pushed
    RATE_LIMITED = "rate_limited"  # the model endpoint kept answering 429/503/529: requeued
    BUDGET_REACHED = "budget_reached"  # the session's cost reached its budget (it waits, blocked)
    AGENT_LIMIT = "agent_limit"  # the built-in agent hit a guardrail (turns, tokens, time, loop)
    INTERNAL = "internal"


class ResultType(enum.StrEnum):
    BRANCH = "branch"  # a pushed branch, and a PR where the forge makes one
    TEXT = "text"  # no change: the engine's final message is the answer


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffStats:
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    type: ResultType
    branch: str | None = None
    commit: str | None = None
    pr_url: str | None = None
    pr_number: int | None = None
    text: str | None = None
    diff: DiffStats = field(default_factory=DiffStats)
    # What the agent did before its time or budget ran out, pushed as a draft.
    partial: bool = False
    # Changed / Verified / Uncertain / Next, computed when the attempt finished (``outcome``).
    outcome: dict[str, Any] | None = None
    # The pull request's risk tier (``telecoder.risk``), its label and whether it merged itself.
    risk: dict[str, Any] | None = None
    # The review stage's tally (``telecoder.review``): findings that did not block.
    review: dict[str, Any] | None = None
    # A verify_failed session's work, pushed to this branch (``TELECODER_PUSH_FAILED``).
    failed_ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "branch": self.branch,
            "commit": self.commit,
            "pr_url": self.pr_url,
            "pr_number": self.pr_number,
            "text": self.text,
            "files_changed": self.diff.files_changed,
            "insertions": self.diff.insertions,
            "deletions": self.diff.deletions,
            "partial": self.partial,
            "outcome": outcomes.complete(self.outcome) if self.outcome is not None else None,
            "risk": self.risk,
            "review": self.review,
            "failed_ref": self.failed_ref,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            type=ResultType(data["type"]),
            branch=data.get("branch"),
            commit=data.get("commit"),
            pr_url=data.get("pr_url"),
            pr_number=data.get("pr_number"),
            text=data.get("text"),
            diff=DiffStats(
                files_changed=data.get("files_changed", 0),
                insertions=data.get("insertions", 0),
                deletions=data.get("deletions", 0),
            ),
            partial=bool(data.get("partial", False)),
            outcome=data.get("outcome") if isinstance(data.get("outcome"), dict) else None,
            risk=data.get("risk") if isinstance(data.get("risk"), dict) else None,
            review=data.get("review") if isinstance(data.get("review"), dict) else None,
            failed_ref=data.get("failed_ref"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSession:
    """What a caller asks for; the store turns it into a Session."""

    repo: str
    prompt: str
    engine: str
    engine_source: EngineSource = EngineSource.REQUEST
    model: str | None = None
    base_ref: str | None = None
    mode: Mode = Mode.TASK
    priority: int = 0
    forge: str | None = None
    max_attempts: int = 3
    timeout_seconds: float | None = None
    parent_id: str | None = None
    origin: dict[str, Any] | None = None
    budget_usd: float | None = None  # the gateway blocks the session when its cost reaches it
    tier: str | None = None  # trivial, standard or complex: which models the gateway routes to
    thread: str | None = None  # "channel:key" of the conversation it answers (Slack, Telegram, …)
    notify: tuple[str, ...] = ()  # "slack:<who>", "telegram:<chat>": told when it ends or asks
    run_id: str | None = None  # the run it belongs to
    task_key: str | None = None  # its name within the run (a plan's task id, a repo)
    chain_id: str | None = None  # the chain of follow-ups it belongs to (its root's id)
    depth: int = 0  # in its chain: 0 for the root, its parent's + 1 for a follow-up
    steps: tuple[str, ...] = ()  # a multi-step task: run in order in one agent conversation
    # An answer session that only reads: its worktree is mounted read-only in the sandbox,
    # no setup or checks run, nothing is committed or pushed (a council's reviewer).
    read_only: bool = False
    user: str | None = None  # who submitted it (API, dashboard); None: the CLI's, a channel's
    id: str = field(default_factory=new_session_id)
    # A retry works on its parent's branch, so it updates the same pull request.
    branch: str = ""

    def __post_init__(self) -> None:
        if not self.branch:
            object.__setattr__(self, "branch", branch_for(self.id))


def branch_for(session_id: str) -> str:
    return f"telecoder/{session_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    id: str
    repo: str
    prompt: str
    engine: str
    model: str | None
    base_ref: str | None
    mode: Mode
    priority: int
    forge: str | None
    branch: str
    status: SessionStatus
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    parent_id: str | None
    origin: dict[str, Any] | None
    cancel_requested: bool
    result: Result | None
    error: str | None
    failure_kind: FailureKind | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    available_at: float
    worker_id: str | None = None
    lease_until: float | None = None
    engine_source: EngineSource = EngineSource.REQUEST
    budget_usd: float | None = None
    tier: str | None = None
    thread: str | None = None
    question: str | None = None  # blocked: what it asks a human (answer it to resume)
    notify: tuple[str, ...] = ()
    run_id: str | None = None
    task_key: str | None = None
    chain_id: str | None = None
    depth: int = 0
    steps: tuple[str, ...] = ()
    read_only: bool = False
    user: str | None = None  # who submitted it; a member sees and acts on their own only

    def outcome(self) -> dict[str, Any] | None:
        """Changed / Verified / Uncertain / Next once the session ended (or waits for its next
        turn): the one stored with the result, else what the result and the error say."""
        if self.status.value not in outcomes.ENDED:
            return None
        if self.result is not None and self.result.outcome is not None:
            return outcomes.complete(self.result.outcome)
        result = self.result.to_dict() if self.result else None
        return outcomes.summarize(status=self.status.value, result=result, error=self.error)

    def to_dict(self) -> dict[str, Any]:
        """The session as JSON: the shape of ``--json`` output and of the HTTP API."""
        return {
            "id": self.id,
            "status": self.status.value,
            "repo": self.repo,
            "prompt": self.prompt,
            "engine": self.engine,
            "engine_source": self.engine_source.value,
            "model": self.model,
            "mode": self.mode.value,
            "base": self.base_ref,
            "branch": self.branch,
            "priority": self.priority,
            "forge": self.forge,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "timeout_seconds": self.timeout_seconds,
            "parent_id": self.parent_id,
            "origin": self.origin,
            "user": self.user,
            "cancel_requested": self.cancel_requested,
            "result": self.result.to_dict() if self.result else None,
            "outcome": self.outcome(),
            "error": self.error,
            "failure_kind": self.failure_kind.value if self.failure_kind else None,
            "cost_usd": self.cost_usd,
            "budget_usd": self.budget_usd,
            "tier": self.tier,
            "thread": self.thread,
            "question": self.question,
            "notify": list(self.notify),
            "run_id": self.run_id,
            "task_key": self.task_key,
            "chain_id": self.chain_id,
            "depth": self.depth,
            "steps": list(self.steps),
            "read_only": self.read_only,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "worker_id": self.worker_id,
        }


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC with milliseconds."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    session_id: str
    number: int
    worker_id: str
    status: AttemptStatus
    started_at: float
    lease_until: float
    heartbeat_at: float
    finished_at: float | None = None
    workspace_path: str | None = None
    branch: str | None = None
    base_sha: str | None = None
    commit_sha: str | None = None
    pushed_sha: str | None = None
    exit_code: int | None = None
    failure_kind: FailureKind | None = None
    error: str | None = None
    engine_session_id: str | None = None

    @property
    def interrupted(self) -> str | None:
        """Why the attempt ended unfinished: ``crashed`` (its worker died or vanished) or
        ``stopped`` (its worker handed it back on purpose); None if it finished."""
        return {AttemptStatus.LOST: "crashed", AttemptStatus.RELEASED: "stopped"}.get(self.status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "worker_id": self.worker_id,
            "status": self.status.value,
            "interrupted": self.interrupted,
            "failure_kind": self.failure_kind.value if self.failure_kind else None,
            "error": self.error,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "base_sha": self.base_sha,
            "commit_sha": self.commit_sha,
            "pushed_sha": self.pushed_sha,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """The fencing token of one attempt: every write for the attempt names it."""

    session_id: str
    attempt: int
    worker_id: str


class WorkerState(enum.StrEnum):
    IDLE = "idle"  # up, running nothing
    WORKING = "working"  # up, running at least one session
    # Shutting down (handing its sessions back), or drained by an operator (finishing what
    # runs): either way claiming nothing.
    DRAINING = "draining"
    OFFLINE = "offline"  # exited, or stopped renewing its heartbeat


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """A worker process as it registered itself; ``state`` already accounts for staleness."""

    id: str
    host: str
    pid: int
    capacity: int
    engines: tuple[str, ...]
    state: WorkerState
    running: int
    started_at: float
    last_heartbeat: float
    drain: bool = False  # an operator drained it: it finishes what runs and claims nothing new
    stats: HostStats | None = None  # what its host reported in the last heartbeat

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "capacity": self.capacity,
            "engines": list(self.engines),
            "state": self.state.value,
            "running": self.running,
            "started_at": iso(self.started_at),
            "last_heartbeat": iso(self.last_heartbeat),
            "drain": self.drain,
            "host_stats": self.stats.to_dict() if self.stats is not None else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HostStats:
    """What a worker's host reports in each heartbeat (None where the host cannot tell)."""

    cpu_count: int | None
    mem_total: int | None  # bytes
    mem_available: int | None  # bytes
    load1: float | None  # the 1-minute load average

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_count": self.cpu_count,
            "mem_total": self.mem_total,
            "mem_available": self.mem_available,
            "load1": self.load1,
        }


class EventKind(enum.StrEnum):
    STATUS = "status"  # the session changed state
    PROGRESS = "progress"  # a pipeline step (workspace ready, committing, pushing, …)
    MESSAGE = "message"  # assistant text; with ``"role": "user"``, a chat message sent to it
    THINKING = "thinking"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    USAGE = "usage"
    OUTPUT = "output"  # a line the engine printed that is not one of the above
    SETUP = "setup"  # a setup command's report (.telecoder.yml ``setup:``)
    VERIFY = "verify"  # a check's report
    ERROR = "error"
    WARNING = "warning"  # the agent CLI warned (e.g. unknown model metadata): not a failure
    NETWORK_DENIED = "network_denied"  # the sandbox tried to reach a host its policy forbids
    RESULT = "result"
    OUTPUT_TRUNCATED = "output_truncated"  # past the attempt's quota, chatter is dropped
    BUDGET_ALERT = "budget_alert"  # a period budget reached 80, 90 or 100 % with this session
    CHAIN = "chain"  # a follow-up spawned, or refused (depth limit, same prompt), when it ended


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: int
    session_id: str
    attempt: int | None
    seq: int
    ts: float
    kind: EventKind
    data: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    kind: EventKind
    data: dict[str, Any]
    ts: float | None = None
