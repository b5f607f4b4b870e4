"""The retry policy: a pure function of the session and how its attempt failed.

Transient failures (the worker vanished, the agent stalled, git or the forge hiccupped) are tried
again with exponential backoff and jitter until ``max_attempts``; then the session is ``dead``.
Permanent failures (bad input, the model refused, setup or verification failed, a secret in the
change, timeout, cancel) end the session at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from telecoder.domain import FailureKind, SessionStatus

TRANSIENT: frozenset[FailureKind] = frozenset(
    {
        FailureKind.WORKER_LOST,
        FailureKind.STALLED,
        FailureKind.WORKSPACE_ERROR,
        FailureKind.PUBLISH_ERROR,
        FailureKind.INTERNAL,
        FailureKind.RATE_LIMITED,
    }
)

# A session whose attempts keep ending rate-limited (a key out of quota for days) is dead after
# this many; such attempts do not count against max_attempts (see store.queue.finish).
RATE_LIMITED_REQUEUES = 10

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    status: SessionStatus  # QUEUED (try again), FAILED, DEAD or CANCELLED
    delay: float = 0.0


def decide(
    kind: FailureKind,
    *,
    attempt: int,
    max_attempts: int,
    retryable: bool | None = None,
    rng: random.Random | None = None,
    base: float = BACKOFF_BASE_SECONDS,
) -> RetryDecision:
    """What becomes of a session whose attempt number ``attempt`` failed with ``kind``.

    ``retryable=False`` says this particular failure cannot succeed later (a forge that
    answered 401, say), whatever its kind; ``None`` leaves it to the kind. ``base``: the first
    retry's delay (``TELECODER_RETRY_BACKOFF_SECONDS``).
    """
    if kind == FailureKind.CANCELLED:
        return RetryDecision(SessionStatus.CANCELLED)
    if kind not in TRANSIENT or retryable is False:
        return RetryDecision(SessionStatus.FAILED)
    if attempt >= max_attempts:
        return RetryDecision(SessionStatus.DEAD)
    return RetryDecision(SessionStatus.QUEUED, backoff(attempt, rng, base=base))


def backoff(
    attempt: int, rng: random.Random | None = None, *, base: float = BACKOFF_BASE_SECONDS
) -> float:
    """Seconds before try ``attempt + 1``: base·2^(attempt-1), capped, with ±25 % jitter."""
    raw = min(BACKOFF_CAP_SECONDS, base * 2 ** max(0, attempt - 1))
    jitter = (rng or random).uniform(0.75, 1.25)
    return float(min(BACKOFF_CAP_SECONDS, raw * jitter))
