"""The retry policy: transient failures come back with backoff, permanent ones end the session."""

from __future__ import annotations

import random

import pytest

from telecoder import retry
from telecoder.domain import FailureKind, SessionStatus

TRANSIENT = {
    FailureKind.WORKER_LOST,
    FailureKind.STALLED,
    FailureKind.WORKSPACE_ERROR,
    FailureKind.PUBLISH_ERROR,
    FailureKind.INTERNAL,
    FailureKind.RATE_LIMITED,  # the endpoint will take requests again
}
PERMANENT = {
    FailureKind.TIMEOUT,
    FailureKind.ENGINE_ERROR,
    FailureKind.MODEL_ERROR,
    FailureKind.SETUP_FAILED,  # a broken install fails the same way again
    FailureKind.VERIFY_FAILED,
    FailureKind.BAD_INPUT,
    FailureKind.SECRET_DETECTED,  # the same agent run would commit the same secret
    FailureKind.SANDBOX_UNAVAILABLE,  # the machine needs bubblewrap first
    FailureKind.WORKTREE_TOO_LARGE,  # the same agent would write as much again
    FailureKind.BUDGET_REACHED,  # more money is a person's decision, not a retry's
    FailureKind.REVIEW_BLOCKED,  # the same change would be blocked again
    FailureKind.AGENT_LIMIT,  # the same agent would hit the same guardrail: raise it or split
}


def test_every_failure_kind_is_classified() -> None:
    assert TRANSIENT | PERMANENT | {FailureKind.CANCELLED} == set(FailureKind)
    assert retry.TRANSIENT == TRANSIENT


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_transient_failures_are_retried_then_dead(kind: FailureKind) -> None:
    first = retry.decide(kind, attempt=1, max_attempts=3, rng=random.Random(1))
    assert first.status == SessionStatus.QUEUED
    assert first.delay > 0
    second = retry.decide(kind, attempt=2, max_attempts=3, rng=random.Random(1))
    assert second.status == SessionStatus.QUEUED
    assert retry.decide(kind, attempt=3, max_attempts=3).status == SessionStatus.DEAD
    assert retry.decide(kind, attempt=4, max_attempts=3).status == SessionStatus.DEAD
    assert retry.decide(kind, attempt=1, max_attempts=1).status == SessionStatus.DEAD


@pytest.mark.parametrize("kind", sorted(PERMANENT))
def test_permanent_failures_fail_at_once(kind: FailureKind) -> None:
    decision = retry.decide(kind, attempt=1, max_attempts=10)
    assert decision == retry.RetryDecision(SessionStatus.FAILED, 0.0)


@pytest.mark.parametrize("kind", list(FailureKind))
def test_a_failure_that_says_it_cannot_succeed_is_never_retried(kind: FailureKind) -> None:
    decision = retry.decide(kind, attempt=1, max_attempts=5, retryable=False)
    expected = SessionStatus.CANCELLED if kind == FailureKind.CANCELLED else SessionStatus.FAILED
    assert decision.status == expected


@pytest.mark.parametrize("kind", list(FailureKind))
def test_retryable_true_does_not_make_a_permanent_kind_transient(kind: FailureKind) -> None:
    plain = retry.decide(kind, attempt=1, max_attempts=5, rng=random.Random(3))
    hinted = retry.decide(kind, attempt=1, max_attempts=5, retryable=True, rng=random.Random(3))
    assert hinted == plain


def test_cancelled_is_cancelled_whatever_the_attempt() -> None:
    for attempt in (1, 3, 99):
        decision = retry.decide(FailureKind.CANCELLED, attempt=attempt, max_attempts=3)
        assert decision == retry.RetryDecision(SessionStatus.CANCELLED, 0.0)


def test_backoff_is_jittered_within_a_quarter() -> None:
    rng = random.Random(7)
    for attempt in range(1, 8):
        raw = min(retry.BACKOFF_CAP_SECONDS, retry.BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        samples = [retry.backoff(attempt, rng) for _ in range(400)]
        assert all(0.75 * raw <= s <= min(1.25 * raw, retry.BACKOFF_CAP_SECONDS) for s in samples)
        # Really jittered: spread over most of the band, not a constant.
        assert max(samples) - min(samples) > 0.3 * raw


def test_backoff_grows_then_is_capped() -> None:
    # The jitter bands of attempt n and n+1 overlap only at the edges; compare midpoints.
    def mid(attempt: int) -> float:
        rng = random.Random(3)
        return sum(retry.backoff(attempt, rng) for _ in range(200)) / 200

    mids = [mid(a) for a in range(1, 8)]
    assert mids == sorted(mids)
    assert mids[1] == pytest.approx(2 * mids[0], rel=0.15)
    assert mid(1) == pytest.approx(retry.BACKOFF_BASE_SECONDS, rel=0.1)
    rng = random.Random(5)
    capped = [retry.backoff(a, rng) for a in (9, 20, 60, 1000) for _ in range(50)]
    assert all(0.75 * retry.BACKOFF_CAP_SECONDS <= c <= retry.BACKOFF_CAP_SECONDS for c in capped)


def test_decision_delay_is_the_backoff() -> None:
    decision = retry.decide(
        FailureKind.WORKER_LOST, attempt=2, max_attempts=5, rng=random.Random(11)
    )
    assert decision.delay == retry.backoff(2, random.Random(11))


def test_the_base_delay_is_a_parameter() -> None:
    """``base`` (TELECODER_RETRY_BACKOFF_SECONDS) scales every delay below the cap."""
    fast = retry.decide(
        FailureKind.WORKER_LOST, attempt=3, max_attempts=5, rng=random.Random(5), base=0.1
    )
    assert fast.delay == retry.backoff(3, random.Random(5), base=0.1)
    assert 0.75 * 0.4 <= fast.delay <= 1.25 * 0.4
