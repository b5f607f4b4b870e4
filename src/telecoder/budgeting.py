"""A session's limits at work: its budget and time limit, stopping on them, resuming after a
raise, and the period budgets' alerts and holds.

- Limits: the task's own (``--budget``, ``--max-time``) beat the repository's
  (``.telecoder.yml`` ``budget:``), which beat the settings (``TELECODER_BUDGET_USD``,
  ``TELECODER_TIMEOUT_SECONDS``). The budget in force is written on the session when its
  attempt starts, so the gateway, ``telecoder show`` and a raise all see the same figure.
- Reaching the budget: the gateway holds the agent's next request and the attempt stops
  (``StopReason.BUDGET``). When the agent's own session can be resumed, the session waits
  ``blocked`` (``budget_reached``) with its worktree and agent session kept; ``telecoder budget
  ID +1.00`` queues it again and its next attempt resumes the same conversation in the same
  worktree (:func:`resumed_turn`). Otherwise what the agent did is pushed as a partial result.
- Running out of time: what the agent did is pushed as a partial result (a draft).
- Period budgets (``store.budgets``): alerts at 80/90/100 % as events of the session whose
  attempt crossed them, and new sessions held back while a budget is spent (:func:`gate`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from telecoder import repoconfig
from telecoder.amounts import BudgetChange
from telecoder.domain import (
    Attempt,
    AttemptStatus,
    EventKind,
    FailureKind,
    Lease,
    Mode,
    Session,
    SessionStatus,
)
from telecoder.endings import timeout_error
from telecoder.errors import TeleCoderError
from telecoder.gateway import budget as policy
from telecoder.gateway.tickets import Ticket
from telecoder.recorder import AttemptControl, EventRecorder, StopReason
from telecoder.settings import Settings
from telecoder.store import Held, Outcome, Store
from telecoder.store.budgets import defaults_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Turn:
    """What an attempt asks of the agent: the task, a chat's next messages, or to go on after
    a raise; ``previous`` is the attempt whose worktree and agent session it continues."""

    prompt: str
    previous: Attempt | None = None
    subject: str | None = None  # the commit's subject when not the session's prompt

    @property
    def resume_id(self) -> str | None:
        return self.previous.engine_session_id if self.previous is not None else None


def budget_of(session: Session, config: repoconfig.RepoConfig, settings: Settings) -> float | None:
    if session.budget_usd is not None:
        return session.budget_usd
    if config.budget.usd is not None:
        return config.budget.usd
    return settings.budget_usd


def time_limit_of(session: Session, config: repoconfig.RepoConfig, settings: Settings) -> float:
    return session.timeout_seconds or config.budget.max_time or settings.timeout_seconds


class Deadline:
    """The attempt's time limit: stops it with ``StopReason.TIMEOUT``; may be set again once
    the repository's limit is known (counted from the attempt's start)."""

    def __init__(self, control: AttemptControl, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._control = control
        self._start = self._loop.time()
        self.seconds = seconds
        self._handle = self._loop.call_later(seconds, control.stop, StopReason.TIMEOUT)

    def reset(self, seconds: float) -> None:
        if seconds == self.seconds:
            return
        self._handle.cancel()
        self.seconds = seconds
        at = self._start + seconds
        self._handle = self._loop.call_at(at, self._control.stop, StopReason.TIMEOUT)

    def cancel(self) -> None:
        self._handle.cancel()


async def resumed_turn(store: Store, session: Session) -> Turn | None:
    """The turn that goes on after a raise: the attempt before stopped on its budget, blocked;
    None when it did not."""
    if session.attempt < 2:
        return None
    before = [
        a
        for a in await store.sessions.attempts(session.id)
        if a.number < session.attempt and a.status != AttemptStatus.RELEASED
    ]
    last = before[-1] if before else None
    if (
        last is None
        or last.failure_kind != FailureKind.BUDGET_REACHED
        or last.status != AttemptStatus.SUCCEEDED  # blocked, not failed
    ):
        return None
    prompt = policy.resume_prompt(session.budget_usd or 0.0)
    subject = None
    talk = await store.sessions.conversation(session.id)
    if talk.texts:  # messages (answers) sent while it waited: answered too
        said = "\n\n".join(talk.texts)
        prompt = f"{prompt}\n\n{said}"
        subject = said if session.mode == Mode.CHAT else None  # a task keeps its subject
    return Turn(prompt, last, subject)


@dataclass(frozen=True, slots=True)
class Stop:
    """Why an attempt stopped on a limit, and whether it waits for a raise."""

    kind: FailureKind  # timeout, budget_reached, or agent_limit (a builtin agent's guardrail)
    error: str
    blocks: bool  # wait blocked for a raise (the agent can be resumed)

    def outcome(self) -> Outcome:
        status = SessionStatus.BLOCKED if self.blocks else SessionStatus.FAILED
        question = self.error if self.blocks else None  # what it asks: a raise
        return Outcome(status=status, failure_kind=self.kind, error=self.error, question=question)


async def stop_on_limit(
    store: Store, lease: Lease, reason: StopReason, limit: float, ticket: Ticket | None = None
) -> Stop:
    if reason == StopReason.TIMEOUT:
        return Stop(FailureKind.TIMEOUT, timeout_error(limit), blocks=False)
    session = await store.sessions.get(lease.session_id)
    spent, budget = session.cost_usd, session.budget_usd or 0.0
    if ticket is not None:  # the gateway's figures: its last requests may not be stored yet
        spent, budget = ticket.spent_usd, ticket.budget_usd or budget
    error = policy.message(spent, budget)
    attempts = await store.sessions.attempts(lease.session_id)
    this = next((a for a in attempts if a.number == lease.attempt), None)
    resumable = this is not None and bool(this.engine_session_id and this.workspace_path)
    return Stop(FailureKind.BUDGET_REACHED, error, blocks=resumable)


class BudgetWatch:
    """The ticket's ``on_budget``: when the gateway finds the budget spent, look at the
    session's budget in the store first (raised meanwhile, perhaps from another host): a
    higher one lets the held request go on; else the attempt stops (``StopReason.BUDGET``)."""

    def __init__(self, store: Store, session_id: str, control: AttemptControl) -> None:
        self.store = store
        self.session_id = session_id
        self.control = control
        self.ticket: Ticket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, spent: float, budget: float) -> None:
        task = asyncio.get_running_loop().create_task(self._check(spent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, spent: float) -> None:
        try:
            current = await self.store.budgets.of_session(self.session_id)
        except Exception:
            log.warning("session %s: could not read its budget", self.session_id, exc_info=True)
            current = None
        if current is not None and current > spent and self.ticket is not None:
            self.ticket.set_budget(current)  # raised while it ran: it goes on
        else:
            self.control.stop(StopReason.BUDGET)


async def requeue_if_raised(store: Store, final: Session | None) -> Session | None:
    """A session that went ``blocked`` on its budget while a raise was on its way (the raise
    found it still running) is queued again at once."""
    if (
        final is None
        or final.status != SessionStatus.BLOCKED
        or final.failure_kind != FailureKind.BUDGET_REACHED
        or final.budget_usd is None
        or final.budget_usd <= final.cost_usd
    ):
        return final
    try:
        return await store.budgets.raise_session(final.id, BudgetChange(final.budget_usd))
    except TeleCoderError:
        return final


async def alert(
    store: Store, settings: Settings, session: Session, recorder: EventRecorder
) -> None:
    """Period budgets this session's spending took past 80, 90 or 100 %: one event each on it
    (once per period, whoever crosses it) and a warning in the log."""
    defaults = defaults_of(settings.budget_daily_usd, settings.budget_monthly_usd)
    try:
        due = await store.budgets.alerts(defaults, policy.user_of(session.origin))
    except Exception:  # an alert must never cost the attempt its result
        log.warning("session %s: could not check the period budgets", session.id, exc_info=True)
        return
    for found in due:
        log.warning("budget alert (session %s): %s", session.id, found.message)
        recorder.add(EventKind.BUDGET_ALERT, found.to_dict())


async def gate(store: Store, settings: Settings) -> Held:
    """Who may not start a new session now (a period budget is spent); each held session's
    status says why."""
    defaults = defaults_of(settings.budget_daily_usd, settings.budget_monthly_usd)
    held = await store.budgets.held(defaults)
    if held.active:
        await store.budgets.hold(held)
    return held
