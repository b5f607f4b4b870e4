"""The nouns of TeleCoder as frozen records, and the rules for moving between states.

No I/O here: the store maps rows to these records, everything else passes them around.
Times are seconds since the epoch (float, UTC); the edges format them.
"""

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


# --- the inbox -----------------------------------------------------------------------------------


class MessageKind(enum.StrEnum):
    MESSAGE = "message"  # a note or a piece of work for an agent (``inbox send``)
    REPLY = "reply"  # an answer to a message (``inbox reply``)
    QUESTION = "question"  # a worker asks its leader (``orch blocked``; an agent in a sandbox)
    ANSWER = "answer"  # the leader's answer to a question (``orch answer``)


class MessageStatus(enum.StrEnum):
    OPEN = "open"  # nobody holds it (a claim that expired comes back here)
    CLAIMED = "claimed"  # an agent holds a lease on it
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (MessageStatus.DONE, MessageStatus.FAILED, MessageStatus.CANCELLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """A file sent with a message, stored whole with its SHA-256."""

    name: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: int
    thread: str
    kind: MessageKind
    sender: str
    recipient: str | None  # None: to the thread, whoever reads it
    body: str
    reply_to: int | None
    status: MessageStatus  # as of ``now`` when read: an expired claim reads ``open``
    claimed_by: str | None
    lease_until: float | None
    progress: str | None  # the holder's last ``update``
    note: str | None  # why it was done, failed or cancelled
    artifacts: tuple[Artifact, ...]
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "thread": self.thread,
            "kind": self.kind.value,
            "from": self.sender,
            "to": self.recipient,
            "body": self.body,
            "reply_to": self.reply_to,
            "status": self.status.value,
            "claimed_by": self.claimed_by,
            "lease_until": iso(self.lease_until),
            "progress": self.progress,
            "note": self.note,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class MemoryKind(enum.StrEnum):
    """What a memory is: the summary of a finished session, a lesson, a user's fact or
    preference (chat channels), or a note someone added by hand."""

    SESSION = "session"
    LESSON = "lesson"
    FACT = "fact"
    NOTE = "note"


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """What TeleCoder remembers: of a repository (``repo``, as sessions name it) or of a user
    (``user``: ``channel:id``, a chat channel's person). Text is masked before it is stored."""

    id: int
    repo: str | None
    user: str | None
    kind: MemoryKind
    text: str
    prompt: str | None  # the session's task, for a session summary
    outcome: str | None  # how that session ended (succeeded, failed, ...)
    files: tuple[str, ...]  # the files it touched
    session_id: str | None  # the session it came from
    embedder: str | None  # which model embedded it (None: no vector; full-text only)
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo": self.repo,
            "user": self.user,
            "kind": self.kind.value,
            "text": self.text,
            "prompt": self.prompt,
            "outcome": self.outcome,
            "files": list(self.files),
            "session_id": self.session_id,
            "embedder": self.embedder,
            "created_at": iso(self.created_at),
        }
