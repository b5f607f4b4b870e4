"""The HTTP boundary: request and response models, and their mapping from domain records.

Times are ISO 8601 in UTC. Strings that reach the database refuse NUL characters (PostgreSQL
cannot store them) and have the column's length as their limit, so a bad request is a 422,
never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from telecoder import amounts
from telecoder.domain import (
    EngineSource,
    Event,
    EventKind,
    FailureKind,
    Mode,
    Result,
    ResultType,
    Session,
    SessionStatus,
    WorkerInfo,
    WorkerState,
)
from telecoder.errors import TeleCoderError


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
SESSION_REF = r"^[0-9A-Za-z_-]{1,64}$"
ENGINE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_SEQ = 2**31 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=200_000)


class SessionCreate(_In):
    """A task to run. ``agent`` is accepted as another name for ``engine``."""

    repo: Annotated[Text, AfterValidator(_not_blank)] = Field(
        max_length=4096,
        description="Local path or git URL of the repository.",
        examples=["/srv/repos/backend"],
    )
    steps: list[Annotated[Text, AfterValidator(_not_blank), Field(max_length=100_000)]] = Field(
        default_factory=list,
        max_length=20,
        description="A multi-step task: steps run in order in one agent conversation, a "
        "checkpoint commit pushed after each; the first failed step stops the rest.",
        examples=[["Add a failing test for the bug", "Fix the bug"]],
    )
    # (template and vars come before prompt: prompt's check reads template)
    template: Text | None = Field(
        default=None, max_length=64, description="A named prompt instead of ``prompt``."
    )
    vars: dict[str, Annotated[Text, Field(max_length=10_000)]] = Field(
        default_factory=dict, max_length=100, description="The template's variables."
    )
    prompt: Annotated[Text, AfterValidator(_not_blank)] | None = Field(
        default=None,
        max_length=100_000,
        validate_default=True,
        description="What to do (for the shell engine: the command); or give ``template``, or "
        "``steps`` (the prompt is then the steps, one a line).",
    )
    engine: Text | None = Field(
        default=None, pattern=ENGINE_NAME, description="Engine to run; the server's default."
    )
    agent: Text | None = Field(
        default=None, pattern=ENGINE_NAME, deprecated=True, description="Same as ``engine``."
    )
    model: Text | None = Field(default=None, max_length=200, description="Model for the engine.")
    base: Text | None = Field(
        default=None, max_length=255, description="Branch, tag or commit to start from."
    )
    mode: Mode = Field(default=Mode.TASK, description="task: run once; chat: take follow-ups.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first.")
    forge: Text | None = Field(
        default=None, pattern=ENGINE_NAME, description="Where results go: auto, local, github."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=7 * 86400, description="Wall-clock limit; the server's default."
    )
    tier: Literal["trivial", "standard", "complex"] | None = Field(
        default=None,
        description="Which tier's models the gateway routes to; default: chosen from the task "
        "(ignored when ``model`` pins one).",
    )
    max_time: Text | None = Field(
        default=None,
        max_length=32,
        description="Wall-clock limit as a duration (90s, 30m, 2h, 1h30m); sets timeout_seconds.",
        examples=["30m"],
    )
    budget_usd: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Dollars the session's model requests may cost; reached, it waits blocked "
        "until the budget is raised (POST /api/sessions/{id}/budget). Default: the "
        "repository's .telecoder.yml, then the server's.",
    )
    notify: list[Annotated[Text, Field(max_length=256)]] = Field(
        default_factory=list,
        max_length=10,
        description="Whom to tell when it finishes, fails or needs input: channel:who "
        "(slack:@me, slack:U123, telegram:456); @me is TELECODER_NOTIFY_ME's id.",
        examples=[["slack:@me"]],
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_or_template(cls, prompt: str | None, info: ValidationInfo) -> str | None:
        template = info.data.get("template")
        if prompt is None and template is None and not info.data.get("steps"):
            raise ValueError("Field required (or give a template, or steps)")
        if prompt is not None and template is not None:
            raise ValueError("give prompt or template, not both")
        if info.data.get("vars") and template is None:
            raise ValueError("vars need a template")
        return prompt

    @model_validator(mode="after")
    def _one_time_limit(self) -> SessionCreate:
        if self.max_time is not None:
            if self.timeout_seconds is not None:
                raise ValueError("timeout_seconds and max_time both set the time limit: give one")
            try:
                seconds = amounts.duration(self.max_time)
            except TeleCoderError as e:
                raise ValueError(e.message) from None
            if seconds > 7 * 86400:
                raise ValueError("max_time is longer than 7 days")
            self.timeout_seconds = seconds
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_repo(cls, data: Any) -> Any:
        """Several repositories make a run, whose shape differs from a session's."""
        if isinstance(data, dict) and "repos" in data:
            raise ValueError(
                "repos: several repositories make a run: POST /api/runs with "
                "{prompt, repos: [...]} (it answers with the run and its sessions)"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _one_engine(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("agent") is not None:
            data = dict(data)
            agent = data.pop("agent")
            if data.get("engine") is not None and data["engine"] != agent:
                raise ValueError("engine and agent name different engines: give one")
            data["engine"] = agent
        return data


class BudgetRaise(_In):
    """A session's new budget: ``usd`` sets it, ``add`` adds to it (give one)."""

    usd: float | None = Field(default=None, ge=0, le=1_000_000, description="The new budget.")
    add: float | None = Field(default=None, gt=0, le=1_000_000, description="Added to it.")

    @model_validator(mode="after")
    def _one(self) -> BudgetRaise:
        if (self.usd is None) == (self.add is None):
            raise ValueError("give one of usd (set the budget) and add (add to it)")
        return self


class MessageCreate(_In):
    text: Annotated[Text, AfterValidator(_not_blank)] = Field(max_length=100_000)


class AnswerCreate(_In):
    """The answer to a session's question: its agent resumes with it."""

    text: Annotated[Text, AfterValidator(_not_blank)] = Field(max_length=100_000)


class CheckPassed(BaseModel):
    command: str
    kind: str


class RiskOut(BaseModel):
    """A pull request's risk tier (README, "Risk tiers"). With ``auto_merge: low`` also
    ``merged`` (bool) and, when it did not, ``not_merged`` (why); ``label_error`` when the forge
    refused the label."""

    model_config = ConfigDict(extra="allow")

    tier: str = Field(description="low, medium or high.")
    label: str = Field(description="The pull request's label: risk:low, risk:medium, risk:high.")
    reasons: list[str] = Field(description="Why this tier (the rules that raised it).")


class OutcomeOut(BaseModel):
    """Changed / Verified / Uncertain / Next: the same as the GitHub status comment says."""

    changed: str = Field(description="What changed: the commit, its diff, the pull request.")
    verified: list[CheckPassed] = Field(description="The checks that passed (last revision).")
    uncertain: list[str] = Field(description="What the agent was unsure of; the error.")
    next: str = Field(description="What a human should do next.")
    risk: RiskOut | None = Field(default=None, description="The pull request's risk tier.")


class ResultOut(BaseModel):
    type: ResultType
    branch: str | None
    commit: str | None
    pr_url: str | None
    pr_number: int | None
    text: str | None
    files_changed: int
    insertions: int
    deletions: int
    partial: bool = Field(
        default=False,
        description="What the agent did before its time or budget ran out, pushed as a draft.",
    )

    outcome: OutcomeOut | None = Field(
        default=None, description="The outcome as computed when the attempt finished."
    )
    risk: RiskOut | None = Field(default=None, description="The pull request's risk tier.")
    review: dict[str, Any] | None = Field(
        default=None,
        description="The review stage's tally (.telecoder.yml review): panel, answered, "
        "missing, consensus, majority, minority, blocking_at, round.",
    )
    failed_ref: str | None = Field(
        default=None,
        description="A verify_failed session's work, pushed to this branch (no pull request; "
        "TELECODER_PUSH_FAILED or .telecoder.yml push_failed).",
    )

    @classmethod
    def of(cls, result: Result) -> ResultOut:
        return cls.model_validate(result.to_dict())


IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class SessionOut(BaseModel):
    """A session, in the shape of ``telecoder show --json`` (``Session.to_dict``)."""

    id: str
    status: SessionStatus
    repo: str
    prompt: str
    engine: str
    engine_source: EngineSource = Field(
        description="request: the task named it; repo: its .telecoder.yml; settings: the default."
    )
    model: str | None
    mode: Mode
    base: str | None
    branch: str
    priority: int
    forge: str | None
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    parent_id: str | None
    origin: dict[str, Any] | None
    user: str | None = Field(
        default=None,
        description="Who submitted it (API, dashboard); none for the CLI's and channels' own.",
    )
    cancel_requested: bool
    result: ResultOut | None
    outcome: OutcomeOut | None = Field(
        default=None, description="Changed / Verified / Uncertain / Next, once it ended."
    )
    error: str | None
    failure_kind: FailureKind | None
    cost_usd: float = Field(description="What its model requests cost (spent).")
    budget_usd: float | None = Field(
        default=None, description="Its budget; reached, it waits blocked for a raise."
    )
    tier: str | None = Field(
        default=None, description="trivial, standard or complex: the models it is routed to."
    )
    thread: str | None = Field(
        default=None, description="The channel thread it answers in (channel:key), if any."
    )
    question: str | None = Field(
        default=None, description="Blocked: what it asks a human (answer it to resume)."
    )
    notify: list[str] = Field(
        default_factory=list, description="Who is told when it finishes, fails or asks."
    )
    run_id: str | None = Field(default=None, description="The run it belongs to, if any.")
    task_key: str | None = Field(
        default=None, description="Its name within the run (a plan's task id, a repository)."
    )
    chain_id: str | None = Field(
        default=None, description="The chain of follow-ups it belongs to (the root's id)."
    )
    depth: int = Field(default=0, description="Its depth in its chain (0: the root).")
    steps: list[str] = Field(
        default_factory=list, description="A multi-step task's steps, run in order."
    )
    read_only: bool = Field(
        default=False,
        description="An answer session that only reads (a council's reviewer): its worktree "
        "is read-only and nothing is committed or pushed.",
    )
    input_tokens: int
    output_tokens: int
    created_at: IsoTime
    updated_at: IsoTime
    started_at: IsoTime | None
    finished_at: IsoTime | None
    worker_id: str | None

    @classmethod
    def of(cls, s: Session) -> SessionOut:
        return cls.model_validate(s.to_dict())


class SessionCreated(SessionOut):
    warnings: list[str] = Field(
        default_factory=list, description="Things to know, e.g. uncommitted changes left out."
    )


class ModelUse(BaseModel):
    endpoint: str
    model: str | None
    requests: int


class SessionDetail(SessionOut):
    """One session with its attempts: the shape of ``telecoder show --json``."""

    models: list[ModelUse] = Field(
        default_factory=list,
        description="The models that answered its requests, by endpoint (from the gateway).",
    )
    attempts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each execution: worker, lease, workspace, how it ended (crashed/stopped).",
    )


class SessionPage(BaseModel):
    sessions: list[SessionOut]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page.")


class EventOut(BaseModel):
    """An event, in the shape of ``telecoder logs --json``."""

    id: int
    session_id: str
    seq: int = Field(description="Position in the session's log; the SSE event id.")
    attempt: int | None
    ts: float = Field(description="When it happened, in seconds since the epoch.")
    kind: EventKind
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            id=e.id,
            session_id=e.session_id,
            seq=e.seq,
            attempt=e.attempt,
            ts=e.ts,
            kind=e.kind,
            data=e.data,
        )


class EventPage(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="Pass as ``after`` for the next page.")
    more: bool = Field(description="True when the page was full: ask again at once.")
    status: SessionStatus = Field(description="The session's status when the page was read.")


class MessageAccepted(BaseModel):
    session_id: str
    seq: int


class DiffOut(BaseModel):
    session_id: str
    attempt: int
    base_sha: str
    head_sha: str | None = Field(description="The commit diffed to; null: the work tree.")
    diff: str
    truncated: bool
    files_changed: int
    insertions: int
    deletions: int


class WorkersOut(BaseModel):
    embedded: int = Field(description="Worker tasks this server runs.")
    alive: int = Field(description="How many of them are running.")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    workers: WorkersOut
    watchers: int = Field(description="Live event streams open.")
    runtime: str = Field(description="Where agents run: sandbox, docker, or local.")
    sandbox: Literal["ok", "unsafe", "unavailable"] = Field(
        description="ok: agents are confined; unsafe: the local runtime (no isolation); "
        "unavailable: no sandbox can start here (sessions fail sandbox_unavailable)."
    )
    sandbox_problem: str | None = Field(default=None, description="Why, when unavailable.")
    endpoints: list[EndpointOut] = Field(
        default_factory=list,
        description="Model endpoints and their health (an unhealthy one does not degrade this).",
    )
    paused: bool = Field(
        default=False, description="Claims are paused (`telecoder pause`): nothing new starts."
    )
    paused_since: float | None = Field(default=None, description="When the pause began.")
    paused_by: str | None = Field(default=None, description="Who paused.")


class VersionOut(BaseModel):
    version: str
    api: int


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    error: str = Field(description="A stable code: bad_input, not_found, conflict, …")
    detail: str
    fields: list[FieldError] = Field(default_factory=list)


class HostStatsOut(BaseModel):
    """A worker's host, as its last heartbeat reported it (null: the host cannot tell)."""

    cpu_count: int | None
    mem_total: int | None = Field(description="Bytes of RAM.")
    mem_available: int | None = Field(description="Bytes of RAM available.")
    load1: float | None = Field(description="The 1-minute load average.")


class WorkerOut(BaseModel):
    """A worker process, in the shape of ``telecoder workers --json``."""

    id: str
    host: str
    pid: int
    capacity: int = Field(description="Sessions it runs at once.")
    engines: list[str] = Field(description="Engines it claims sessions of; empty: any.")
    state: WorkerState
    running: int
    started_at: IsoTime
    last_heartbeat: IsoTime
    drain: bool = Field(
        description="An operator drained it: it finishes what runs and claims nothing new."
    )
    host_stats: HostStatsOut | None = Field(
        description="What its host reported in the last heartbeat; null until it has."
    )

    @classmethod
    def of(cls, w: WorkerInfo) -> WorkerOut:
        return cls.model_validate(w.to_dict())


# --- model endpoints ---

ENDPOINT_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class EndpointCreate(_In):
    """A model endpoint to register; its key stays in the gateway's environment."""

    name: str = Field(pattern=ENDPOINT_NAME, description="Its name, e.g. anthropic-2.")
    url: Text = Field(max_length=2048, description="Its base URL.")
    kind: Literal["anthropic", "openai", "gemini", "ollama"] = Field(
        description="The API it speaks."
    )
    key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="The variable of the gateway's environment that holds its key.",
    )


class EndpointOut(BaseModel):
    """A model endpoint, in the shape of ``telecoder endpoints list --json``."""

    name: str
    url: str
    kind: str
    key_env: str | None = Field(description="Where its key is (a variable name; never the key).")
    source: Literal["env", "registered"] = Field(
        description="env: from the operator's environment; registered: `endpoints add`."
    )
    healthy: bool | None = Field(description="null: not checked yet.")
    latency_ms: float | None
    models: list[str]
    error: str | None
    checked_at: float | None = Field(description="Seconds since the epoch.")
    failures: int = Field(description="Requests of real traffic failed in a row.")
    backoff_until: float | None = Field(
        description="Rate-limited: no request before this time (seconds since the epoch)."
    )
