"""The remote-worker wire protocol, server side (the ``telecoder worker --server`` client is
next): a worker on another host, holding a ``worker`` token, runs sessions through these calls
instead of the database. Every write for an attempt names its lease (worker id + attempt) and is
fenced on it: a stale lease is refused with 409 ``lease_lost``.

- ``POST /api/workers/register``: sign in (``workers.register``).
- ``POST /api/workers/claim``: the best queued session, its lease and its run (kind, spec), or
  204 (nothing, paused, or this worker is drained).
- ``POST /api/workers/renew``: the worker's heartbeat (state, host figures) and all its leases at
  once; answers whether it is drained, and each lease still held (with its cancel flag).
- ``POST /api/workers/{session_id}/events``: append the attempt's events.
- ``POST /api/workers/{session_id}/progress``: what the attempt learnt of itself as it ran, as a
  local worker records it: its base commit and branch, the engine the repository chose, the
  budget in force, the follow-up rules its ``.telecoder.yml`` gave (so a chain starts here).
- ``POST /api/workers/{session_id}/usage``: the attempt's metered model requests (the host's
  gateway), added to the session's totals and to ``telecoder costs``; ``first`` starts the
  attempt's rows over, so a call sent again counts nothing twice. Sent before ``finish``, so
  the session reports the model that answered it.
- ``POST /api/workers/{session_id}/finish``: end the attempt with its outcome.
- ``POST /api/workers/{session_id}/release``: hand the session back to the queue at once (the
  worker is shutting down); the attempt does not count against ``max_attempts``.

A worker token is one worker's: its first ``register`` binds it to the worker id it names
(``api_tokens.worker_id``); another worker id with it is refused (403). Admin tokens may act
for any worker.

A claim first requeues sessions whose leases expired (a remote worker killed mid-session), so a
server with no embedded worker recovers them too.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from telecoder.domain import (
    EngineSource,
    EventKind,
    FailureKind,
    HostStats,
    Lease,
    Mode,
    NewEvent,
    Result,
    SessionStatus,
    WorkerState,
)
from telecoder.errors import BadInput, Conflict
from telecoder.repoconfig import FollowUp
from telecoder.server.auth import AuthError, Principal
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep
from telecoder.server.schemas import MAX_SEQ, SESSION_REF, ErrorOut, Text, WorkerOut, _In
from telecoder.store import Outcome, UsageRow

router = APIRouter(prefix="/api/workers", tags=["remote workers"])

# Integer columns are 32-bit (PostgreSQL INTEGER); memory figures are BIGINT.
MAX_BYTES = 2**62
EngineName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
WorkerId = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    403: {"model": ErrorOut, "description": "Not a worker (or admin) token."},
    409: {"model": ErrorOut, "description": "The lease is lost (or the id is in use)."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}


class HostIn(_In):
    cpu_count: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    mem_total: int | None = Field(default=None, ge=0, le=MAX_BYTES)
    mem_available: int | None = Field(default=None, ge=0, le=MAX_BYTES)
    load1: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    def stats(self) -> HostStats:
        return HostStats(**self.model_dump())


class RegisterIn(_In):
    worker_id: str = WorkerId
    host: Text = Field(min_length=1, max_length=255)
    pid: int = Field(ge=0, le=MAX_SEQ)
    capacity: int = Field(ge=1, le=1000)
    engines: list[EngineName] = Field(default_factory=list, max_length=100)
    host_stats: HostIn | None = None


class ClaimIn(_In):
    worker_id: str = WorkerId
    engines: list[EngineName] | None = Field(default=None, max_length=100)


class LeaseIn(_In):
    """The fencing token of one attempt, as ``claim`` gave it."""

    worker_id: str = WorkerId
    attempt: int = Field(ge=1, le=MAX_SEQ)

    def of(self, session_id: str) -> Lease:
        return Lease(session_id=session_id, attempt=self.attempt, worker_id=self.worker_id)


class LeaseOut(BaseModel):
    session_id: str
    attempt: int
    worker_id: str


class ClaimedRun(BaseModel):
    """The run of a claimed session, as much as its attempt reads of it."""

    id: str
    kind: str = Field(description="fanout, plan, job, best_of, single, orch or council.")
    name: str | None
    spec: dict[str, Any] = Field(description="What made it.")


class EventOut(BaseModel):
    kind: str
    data: dict[str, Any]
    ts: float


class ClaimOut(BaseModel):
    session: dict[str, Any] = Field(description="The session, as ``GET /api/sessions/{id}``.")
    lease: LeaseOut
    lease_until: float | None = Field(description="Renew before this (Unix time).")
    run: ClaimedRun | None = Field(
        default=None, description="Its run (a best-of candidate only pushes its branch)."
    )
    continues: int | None = Field(
        default=None,
        description="A chat's next turn, or a blocked task's: the attempt whose workspace it "
        "continues (kept on the host that ran it).",
    )
    messages: list[EventOut] = Field(
        default_factory=list, description="The messages its next turn answers, oldest first."
    )


class HeldIn(_In):
    session_id: str = Field(pattern=SESSION_REF)
    attempt: int = Field(ge=1, le=MAX_SEQ)


class RenewIn(_In):
    worker_id: str = WorkerId
    state: WorkerState = WorkerState.IDLE
    running: int = Field(default=0, ge=0, le=MAX_SEQ)
    host_stats: HostIn | None = None
    leases: list[HeldIn] = Field(default_factory=list, max_length=1000)


class HeldOut(BaseModel):
    lease_until: float
    cancel_requested: bool


class RenewOut(BaseModel):
    drain: bool = Field(description="Drained by an operator: claim nothing new.")
    held: dict[str, HeldOut] = Field(description="By session id; a lease missing here is lost.")


class EventIn(_In):
    kind: Text = Field(max_length=32)
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class EventsIn(_In):
    lease: LeaseIn
    events: list[EventIn] = Field(max_length=1000)


class EventsOut(BaseModel):
    last_seq: int


class OutcomeIn(_In):
    status: SessionStatus
    result: dict[str, Any] | None = None
    failure_kind: FailureKind | None = None
    error: Text | None = Field(default=None, max_length=20_000)
    retryable: bool | None = None
    pushed_sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,64}$")
    cost_usd: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    input_tokens: int = Field(default=0, ge=0, le=MAX_SEQ)
    output_tokens: int = Field(default=0, ge=0, le=MAX_SEQ)
    exit_code: int | None = Field(default=None, ge=-MAX_SEQ, le=MAX_SEQ)
    not_before: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    question: Text | None = Field(default=None, max_length=20_000)


class FollowUpsIn(_In):
    """The ``on_success`` / ``on_failure`` rules the attempt read (``store.chains``)."""

    max_depth: int = Field(ge=0, le=100)
    on_success: list[FollowUp] = Field(default_factory=list, max_length=10)
    on_failure: list[FollowUp] = Field(default_factory=list, max_length=10)


class ProgressIn(_In):
    """Only the fields given are written (``budget_usd: null`` too: no budget)."""

    lease: LeaseIn
    base_sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,64}$")
    branch: Text | None = Field(default=None, min_length=1, max_length=255)
    engine_session_id: Text | None = Field(default=None, min_length=1, max_length=255)
    follow_ups: FollowUpsIn | None = None
    engine: EngineName | None = Field(default=None, description="The repository's choice.")
    budget_usd: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)


class UsageIn(_In):
    """One model request as the host's gateway metered it."""

    endpoint: Text = Field(min_length=1, max_length=64)
    api: Text = Field(min_length=1, max_length=32)
    status: int = Field(ge=0, le=999)
    latency_ms: float = Field(ge=0, le=1e12, allow_inf_nan=False)
    ts: float = Field(ge=0, le=1e11, allow_inf_nan=False)
    repo: Text | None = Field(default=None, max_length=1000)
    engine: Text | None = Field(default=None, max_length=64)
    user: Text | None = Field(default=None, max_length=255)
    model: Text | None = Field(default=None, max_length=200)
    input_tokens: int = Field(default=0, ge=0, le=MAX_SEQ)
    output_tokens: int = Field(default=0, ge=0, le=MAX_SEQ)
    cache_read_tokens: int = Field(default=0, ge=0, le=MAX_SEQ)
    cache_write_tokens: int = Field(default=0, ge=0, le=MAX_SEQ)
    cost_usd: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    ttft_ms: float | None = Field(default=None, ge=0, le=1e12, allow_inf_nan=False)
    streamed: bool = False

    def row(self) -> UsageRow:
        return UsageRow(**self.model_dump())


class UsagesIn(_In):
    lease: LeaseIn
    first: bool = Field(description="These rows start the attempt's usage over.")
    rows: list[UsageIn] = Field(max_length=1000)


class UsageOut(BaseModel):
    rows: int = Field(description="The rows the server has for this attempt now.")


class ReleaseIn(_In):
    lease: LeaseIn
    reason: Text = Field(default="the worker shut down", min_length=1, max_length=1000)
    events: list[EventIn] = Field(default_factory=list, max_length=1000)


class ReleaseOut(BaseModel):
    released: bool = Field(description="False: the lease was lost already (nothing changed).")


class FinishIn(_In):
    lease: LeaseIn
    outcome: OutcomeIn
    events: list[EventIn] = Field(default_factory=list, max_length=1000)


_ENDINGS = {
    SessionStatus.SUCCEEDED,
    SessionStatus.FAILED,
    SessionStatus.CANCELLED,
    SessionStatus.BLOCKED,
}


def _as(principal: Principal, worker_id: str) -> None:
    """Refuse (403) a worker token that is not ``worker_id``'s."""
    if principal.role != "worker" or principal.token_id is None:
        return  # an admin (or an env token) may act for any worker
    if principal.worker_id != worker_id:
        whose = f"it is {principal.worker_id}'s" if principal.worker_id else "register first"
        raise AuthError(403, f"this worker token is not worker {worker_id}'s ({whose})")


def _events(found: list[EventIn]) -> list[NewEvent]:
    try:
        return [NewEvent(kind=EventKind(e.kind), data=e.data, ts=e.ts) for e in found]
    except ValueError as e:
        raise BadInput(f"unknown event kind: {e}") from None


@router.post("/register", responses=_ERRORS, summary="A remote worker signs in")
async def register(body: RegisterIn, store: StoreDep, principal: PrincipalDep) -> WorkerOut:
    """Refused: 403 when the token is another worker's; 409 while another process holds this
    id (its heartbeat is not a lease old yet)."""
    if principal.role == "worker" and principal.token_id is not None:
        try:
            await store.users.bind_worker(principal.token_id, body.worker_id)
        except Conflict as e:
            raise AuthError(403, e.message) from None
    await store.workers.register(
        body.worker_id,
        host=body.host,
        pid=body.pid,
        capacity=body.capacity,
        engines=body.engines,
        remote=True,
    )
    if body.host_stats is not None:
        await store.workers.beat(
            body.worker_id,
            state=WorkerState.IDLE,
            running=0,
            stats=body.host_stats.stats(),
        )
    return WorkerOut.of(await store.workers.get(body.worker_id))


@router.post(
    "/claim",
    responses={**_ERRORS, 204: {"description": "Nothing to claim now."}},
    response_model=ClaimOut,
    summary="Claim the best queued session: the session and its lease",
)
async def claim(body: ClaimIn, store: StoreDep, principal: PrincipalDep) -> ClaimOut | Response:
    """204 when nothing is due, claims are paused, or an operator drained this worker."""
    _as(principal, body.worker_id)
    await store.workers.get(body.worker_id)  # 404 unless registered
    await store.queue.recover_expired()  # a worker that died mid-session: its lease ran out
    claimed = await store.queue.claim(body.worker_id, engines=body.engines)
    if claimed is None:
        return Response(status_code=204)
    lease = claimed.lease
    run: ClaimedRun | None = None
    if claimed.session.run_id is not None:
        found = await store.runs.get(claimed.session.run_id)
        run = ClaimedRun(id=found.id, kind=found.kind.value, name=found.name, spec=found.spec)
    continues, messages = None, []
    if claimed.session.mode == Mode.CHAT or claimed.session.attempt > 1:
        # A chat's next turn, or a blocked task's (answered, or its budget raised).
        talk = await store.sessions.conversation(claimed.session.id)
        if talk.previous is not None or claimed.session.mode == Mode.CHAT:
            continues = talk.previous.number if talk.previous is not None else None
            messages = [EventOut(kind=e.kind.value, data=e.data, ts=e.ts) for e in talk.pending]
    return ClaimOut(
        continues=continues,
        messages=messages,
        session=claimed.session.to_dict(),
        lease=LeaseOut(
            session_id=lease.session_id, attempt=lease.attempt, worker_id=lease.worker_id
        ),
        lease_until=claimed.session.lease_until,
        run=run,
    )


@router.post("/renew", responses=_ERRORS, summary="The worker's heartbeat and all its leases")
async def renew(body: RenewIn, store: StoreDep, principal: PrincipalDep) -> RenewOut:
    _as(principal, body.worker_id)
    stats = body.host_stats.stats() if body.host_stats is not None else None
    drain = await store.workers.beat(
        body.worker_id, state=body.state, running=body.running, stats=stats
    )
    leases = [
        Lease(session_id=h.session_id, attempt=h.attempt, worker_id=body.worker_id)
        for h in body.leases
    ]
    beats = await store.queue.renew(leases)
    return RenewOut(
        drain=drain,
        held={
            sid: HeldOut(lease_until=b.lease_until, cancel_requested=b.cancel_requested)
            for sid, b in beats.items()
        },
    )


@router.post(
    "/{session_id}/events", responses=_ERRORS, summary="Append an attempt's events (fenced)"
)
async def append_events(
    session_id: str, body: EventsIn, store: StoreDep, principal: PrincipalDep
) -> EventsOut:
    _as(principal, body.lease.worker_id)
    last = await store.events.append(session_id, _events(body.events), body.lease.of(session_id))
    return EventsOut(last_seq=last)


@router.post(
    "/{session_id}/progress",
    responses=_ERRORS,
    status_code=204,
    summary="Record what the attempt learnt as it ran (fenced)",
)
async def progress(
    session_id: str, body: ProgressIn, store: StoreDep, principal: PrincipalDep
) -> None:
    """Base commit, branch, agent session, follow-up rules: on the attempt; the engine the
    repository chose and the budget in force: on the session."""
    _as(principal, body.lease.worker_id)
    lease = body.lease.of(session_id)
    given = body.model_fields_set
    fields: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("base_sha", "branch", "engine_session_id")
        if name in given and getattr(body, name) is not None
    }
    if body.follow_ups is not None:
        rules = body.follow_ups.model_dump(exclude_none=True)
        fields["follow_ups"] = json.dumps(rules)
    if fields:
        await store.queue.record(lease, **fields)
    else:
        await store.queue.hold(lease)  # nothing to write: still a stale lease is refused
    if body.engine is not None:
        await store.queue.choose_engine(lease, body.engine, EngineSource.REPO)
    if "budget_usd" in given:
        await store.queue.record_budget(lease, body.budget_usd)


@router.post(
    "/{session_id}/usage",
    responses=_ERRORS,
    summary="Add the attempt's metered model requests (fenced)",
)
async def add_usage(
    session_id: str, body: UsagesIn, store: StoreDep, principal: PrincipalDep
) -> UsageOut:
    _as(principal, body.lease.worker_id)
    lease = body.lease.of(session_id)
    stored = await store.usage.forwarded(lease, [u.row() for u in body.rows], first=body.first)
    return UsageOut(rows=stored)


@router.post(
    "/{session_id}/finish", responses=_ERRORS, summary="End an attempt with its outcome (fenced)"
)
async def finish(
    session_id: str, body: FinishIn, state: StateDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The session as it is now (retried, dead, or ended). A best-of run whose last candidate
    it was is judged here, as a local worker would (``upkeep``)."""
    store = state.store
    _as(principal, body.lease.worker_id)
    o = body.outcome
    if o.status not in _ENDINGS:
        raise BadInput(f"an attempt cannot end {o.status.value}")
    try:
        result = Result.from_dict(o.result) if o.result is not None else None
    except (KeyError, ValueError, TypeError) as e:
        raise BadInput(f"invalid result: {e}") from None
    outcome = Outcome(
        status=o.status,
        result=result,
        failure_kind=o.failure_kind,
        error=o.error,
        retryable=o.retryable,
        pushed_sha=o.pushed_sha,
        cost_usd=o.cost_usd,
        input_tokens=o.input_tokens,
        output_tokens=o.output_tokens,
        exit_code=o.exit_code,
        not_before=o.not_before,
        question=o.question,
    )
    final = await store.queue.finish(body.lease.of(session_id), outcome, _events(body.events))
    if state.upkeep is not None:
        state.upkeep.ended(final)
    return final.to_dict()


@router.post(
    "/{session_id}/release",
    responses=_ERRORS,
    summary="Hand a session back to the queue at once (fenced)",
)
async def release(
    session_id: str, body: ReleaseIn, store: StoreDep, principal: PrincipalDep
) -> ReleaseOut:
    """The worker shuts down: the session is queued again without waiting for its lease."""
    _as(principal, body.lease.worker_id)
    lease = body.lease.of(session_id)
    released = await store.queue.release(lease, body.reason, _events(body.events))
    return ReleaseOut(released=released)
