"""The retry policy for every failure kind: which are retried, how long to wait, when to stop."""

from __future__ import annotations

import random

import pytest

from telecoder import retry
from telecoder.domain import FailureKind, SessionStatus

# The policy, written out: a new kind must be added here on purpose.
EXPECTED = {
    FailureKind.TIMEOUT: "permanent",  # it would only time out again
    FailureKind.STALLED: "transient",
    FailureKind.WORKER_LOST: "transient",
    FailureKind.ENGINE_ERROR: "permanent",
    FailureKind.MODEL_ERROR: "permanent",
    FailureKind.VERIFY_FAILED: "permanent",
    FailureKind.CANCELLED: "cancelled",
    FailureKind.BAD_INPUT: "permanent",
    FailureKind.WORKSPACE_ERROR: "transient",
    FailureKind.PUBLISH_ERROR: "transient",
    FailureKind.INTERNAL: "transient",
}


def test_every_kind_is_classified():
    assert set(EXPECTED) == set(FailureKind)
    assert {k for k, v in EXPECTED.items() if v == "transient"} == retry.TRANSIENT


@pytest.mark.parametrize("kind", list(FailureKind))
def test_first_failure(kind: FailureKind):
    decision = retry.decide(kind, attempt=1, max_attempts=3, rng=random.Random(1))
    expected = {
        "transient": SessionStatus.QUEUED,
        "permanent": SessionStatus.FAILED,
        "cancelled": SessionStatus.CANCELLED,
    }[EXPECTED[kind]]
    assert decision.status == expected
    if expected == SessionStatus.QUEUED:
        assert 1.5 <= decision.delay <= 2.5  # 2 s ± 25 %
    else:
        assert decision.delay == 0


@pytest.mark.parametrize("kind", sorted(retry.TRANSIENT))
def test_transient_kinds_are_dead_after_the_last_attempt(kind: FailureKind):
    assert retry.decide(kind, attempt=2, max_attempts=3).status == SessionStatus.QUEUED
    assert retry.decide(kind, attempt=3, max_attempts=3).status == SessionStatus.DEAD
    assert retry.decide(kind, attempt=7, max_attempts=3).status == SessionStatus.DEAD
    assert retry.decide(kind, attempt=1, max_attempts=1).status == SessionStatus.DEAD


@pytest.mark.parametrize("kind", list(FailureKind))
def test_a_failure_that_says_it_cannot_succeed_is_never_retried(kind: FailureKind):
    decision = retry.decide(kind, attempt=1, max_attempts=5, retryable=False)
    expected = SessionStatus.CANCELLED if kind == FailureKind.CANCELLED else SessionStatus.FAILED
    assert decision.status == expected


@pytest.mark.parametrize("kind", list(FailureKind))
def test_retryable_true_does_not_make_a_permanent_kind_transient(kind: FailureKind):
    plain = retry.decide(kind, attempt=1, max_attempts=5, rng=random.Random(3))
    hinted = retry.decide(kind, attempt=1, max_attempts=5, retryable=True, rng=random.Random(3))
    assert hinted == plain


def test_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(42)
    for attempt in range(1, 30):
        raw = min(retry.BACKOFF_CAP_SECONDS, retry.BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        for _ in range(50):
            delay = retry.backoff(attempt, rng)
            assert 0.75 * raw <= delay <= min(retry.BACKOFF_CAP_SECONDS, 1.25 * raw)
    # Jitter spreads a crowd of retries out instead of sending them back together.
    delays = {round(retry.backoff(3, rng), 6) for _ in range(100)}
    assert len(delays) > 90
