"""The HTTP boundary: request and response models, and their mapping from domain records.

Times are ISO 8601 in UTC. Strings that reach the database refuse NUL characters (PostgreSQL
cannot store them) and have the column's length as their limit, so a bad request is a 422,
never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from telecoder.domain import (
    Event,
    EventKind,
    FailureKind,
    Mode,
    Result,
    ResultType,
    Session,
    SessionStatus,
)


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


def iso(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=200_000)


class SessionCreate(_In):
    """A task to run. ``agent`` is accepted as another name for ``engine``."""

    repo: Annotated[Text, AfterValidator(_not_blank)] = Field(
        max_length=4096,
        description="Local path or git URL of the repository.",
        examples=["/srv/repos/backend"],
    )
    prompt: Annotated[Text, AfterValidator(_not_blank)] = Field(
        max_length=100_000, description="What to do (for the shell engine: the command)."
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

    @model_validator(mode="after")
    def _one_engine(self) -> SessionCreate:
        if self.agent is not None:
            if self.engine is not None and self.engine != self.agent:
                raise ValueError("engine and agent name different engines: give one")
            self.engine = self.agent
        return self


class MessageCreate(_In):
    text: Annotated[Text, AfterValidator(_not_blank)] = Field(max_length=100_000)


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

    @classmethod
    def of(cls, result: Result) -> ResultOut:
        return cls.model_validate(result.to_dict())


class SessionOut(BaseModel):
    id: str
    repo: str
    prompt: str
    engine: str
    model: str | None
    base_ref: str | None
    mode: Mode
    priority: int
    branch: str
    status: SessionStatus
    attempt: int
    max_attempts: int
    parent_id: str | None
    cancel_requested: bool
    result: ResultOut | None
    error: str | None
    failure_kind: FailureKind | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    worker_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, s: Session) -> SessionOut:
        return cls(
            id=s.id,
            repo=s.repo,
            prompt=s.prompt,
            engine=s.engine,
            model=s.model,
            base_ref=s.base_ref,
            mode=s.mode,
            priority=s.priority,
            branch=s.branch,
            status=s.status,
            attempt=s.attempt,
            max_attempts=s.max_attempts,
            parent_id=s.parent_id,
            cancel_requested=s.cancel_requested,
            result=ResultOut.of(s.result) if s.result else None,
            error=s.error,
            failure_kind=s.failure_kind,
            cost_usd=s.cost_usd,
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            worker_id=s.worker_id,
            created_at=datetime.fromtimestamp(s.created_at, UTC),
            updated_at=datetime.fromtimestamp(s.updated_at, UTC),
            started_at=iso(s.started_at),
            finished_at=iso(s.finished_at),
        )


class SessionPage(BaseModel):
    sessions: list[SessionOut]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page.")


class EventOut(BaseModel):
    id: int
    seq: int = Field(description="Position in the session's log; the SSE event id.")
    session_id: str
    attempt: int | None
    ts: datetime
    kind: EventKind
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            id=e.id,
            seq=e.seq,
            session_id=e.session_id,
            attempt=e.attempt,
            ts=datetime.fromtimestamp(e.ts, UTC),
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
