"""How an attempt ends when it does not end well by itself, and the words it leaves behind.

- ``stopped_outcome``: the outcome of an attempt stopped early (cancel, stall, a worktree past
  its cap); a timeout or a budget is ``budgeting``'s, since what the agent did may be kept.
- ``commit_message``: the subject from the prompt, the whole prompt below, the session's id as
  a trailer; a partial result (stopped by its time or budget limit) says so in its subject and
  in a ``TeleCoder-Partial: timeout`` trailer.
- ``choose_forge``: where a session's result goes.
- ``failed``, ``masked``: an attempt's failure as an event and an outcome; an outcome with
  every secret in its text and error masked.
- ``Stopped``, ``check``: an attempt stopped early (its ``AttemptControl`` says why) leaves its
  steps by raising ``Stopped``.
- ``usage_fields``, ``rate_limited``: an outcome's usage; the outcome of an agent that failed
  because the gateway gave up waiting out a rate limit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from telecoder.domain import EventKind, FailureKind, Session, SessionStatus
from telecoder.errors import BadInput
from telecoder.gateway.tickets import Ticket
from telecoder.masking import Masker
from telecoder.protocols import Forge, Usage
from telecoder.recorder import AttemptControl, EventRecorder, StopReason
from telecoder.store import Outcome

PARTIAL_PREFIX = "[partial] "


def choose_forge(forges: Mapping[str, Forge], name: str, remote_url: str) -> Forge:
    """The forge called ``name``; for ``auto``, the first that claims the remote, else local."""
    if name != "auto":
        forge = forges.get(name)
        if forge is None:
            raise BadInput(f"unknown forge {name!r} (known: auto, {', '.join(forges)})")
        return forge
    for forge_name, forge in forges.items():
        if forge_name != "local" and forge.handles(remote_url):
            return forge
    return forges["local"]


def commit_message(
    session: Session, prompt: str | None = None, *, partial: str | None = None
) -> str:
    """Subject from the prompt's first line; the whole prompt and the session id below.

    ``prompt``: a chat's follow-up message, instead of the session's first prompt.
    ``partial``: why the agent was stopped (``timeout``, ``budget_reached``, ``agent_limit``):
    a draft.
    """
    prompt = (prompt if prompt is not None else session.prompt).strip()
    first = prompt.splitlines()[0] if prompt else "TeleCoder change"
    prefix = PARTIAL_PREFIX if partial else ""
    room = 72 - len(prefix)
    subject = first if len(first) <= room else first[: room - 1].rstrip() + "…"
    body = prompt if prompt != subject else ""
    trailers = f"TeleCoder-Session: {session.id}"
    if partial:
        trailers += f"\nTeleCoder-Partial: {partial}"
    parts = [prefix + subject, body, trailers]
    return "\n\n".join(p for p in parts if p) + "\n"


def stopped_outcome(reason: StopReason, limit: float, cap: int | None = None) -> Outcome | None:
    if reason == StopReason.CANCELLED:
        return Outcome(
            status=SessionStatus.CANCELLED,
            failure_kind=FailureKind.CANCELLED,
            error="cancelled by request",
        )
    if reason == StopReason.TIMEOUT:
        return Outcome(
            status=SessionStatus.FAILED,
            failure_kind=FailureKind.TIMEOUT,
            error=timeout_error(limit),
        )
    if reason == StopReason.STALLED:
        return Outcome(
            status=SessionStatus.FAILED,
            failure_kind=FailureKind.STALLED,
            error="the agent printed nothing for too long (stall watchdog) and was stopped",
        )
    if reason == StopReason.TOO_LARGE:
        return Outcome(
            status=SessionStatus.FAILED,
            failure_kind=FailureKind.WORKTREE_TOO_LARGE,
            error=f"the agent made the worktree hold more than {cap} bytes "
            "(TELECODER_WORKTREE_MAX_BYTES) and was stopped; nothing was pushed",
        )
    return None  # SHUTDOWN and LEASE_LOST: not this worker's to finish


def timeout_error(limit: float) -> str:
    return f"the session ran past its time limit of {limit:g} s and was stopped"


def failed(recorder: EventRecorder, kind: FailureKind, error: str) -> Outcome:
    recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": error})
    return Outcome(status=SessionStatus.FAILED, failure_kind=kind, error=error)


def masked(outcome: Outcome | None, masker: Masker) -> Outcome | None:
    """The outcome with any secret in its result text, the result's outcome (which quotes the
    text) or error replaced by ``***``."""
    if outcome is None or not masker:
        return outcome
    result = outcome.result
    if result is not None and result.text:
        result = replace(result, text=masker.text(result.text))
    if result is not None and result.outcome:
        result = replace(result, outcome=masker.data(result.outcome))
    error = masker.text(outcome.error) if outcome.error else outcome.error
    return replace(outcome, result=result, error=error)


class Stopped(Exception):
    """The attempt was told to stop (cancel, timeout, budget, lost lease, shutdown).

    A plain exception, not a frozen slots dataclass: a context manager it passes through sets its
    ``__traceback__``, which a frozen dataclass refuses (the attempt then ended ``failed``)."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def check(control: AttemptControl) -> None:
    if control.reason is not None:
        raise Stopped(control.reason)


def usage_fields(usage: Usage) -> dict[str, Any]:
    return {
        "cost_usd": usage.cost_usd or 0.0,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }


def rate_limited(ticket: Ticket, error: str | None, usage: Usage) -> Outcome:
    """The agent failed after the gateway gave up waiting out a rate limit: not the task's
    fault, so the session is requeued (``rate_limited``), not before the endpoint opens."""
    until = ticket.rate_limited_until
    wait = f" until {time.strftime('%H:%M:%S', time.localtime(until))}" if until else ""
    message = f"the model endpoint kept rate-limiting{wait}; requeued"
    return Outcome(
        status=SessionStatus.FAILED,
        failure_kind=FailureKind.RATE_LIMITED,
        error=f"{message} ({error})" if error else message,
        not_before=until,
        **usage_fields(usage),
    )


def forge_secrets(forge: Forge, remote_url: str) -> tuple[str, ...]:
    """The token the forge gives git for the remote (a GitHub App's installation token
    included), for the masker of the session that uses it; nothing for a forge without one."""
    secrets = getattr(forge, "secrets", None)
    return tuple(secrets(remote_url)) if secrets is not None else ()
