"""Budgets as plain functions: amounts people type, the block message, periods and alert levels,
partial commit messages, and `.telecoder.yml`'s `budget:`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from telecoder import amounts, repoconfig
from telecoder.endings import commit_message
from telecoder.errors import BadInput
from telecoder.gateway import budget
from telecoder.store import budgets
from tests.factories import make_session


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("45", 45),
     ("1.5h", 5400), (" 2H ", 7200), (120, 120)],
)  # fmt: skip
def test_durations(text: str | int, seconds: float) -> None:
    assert amounts.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "30x", "1h30", "-5m", "0s", "h1", "1m 2q", "nan"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadInput):
        amounts.duration(text)


def test_shown_durations() -> None:
    assert [amounts.shown_duration(s) for s in (90, 1800, 5400, 3600, 7)] == [
        "1m30s",
        "30m",
        "1h30m",
        "1h",
        "7s",
    ]


def test_budget_changes_add_or_set() -> None:
    assert amounts.budget_change("+1.00").apply(2.0) == 3.0
    assert amounts.budget_change("+1").apply(None) == 1.0
    assert amounts.budget_change("5.00").apply(2.0) == 5.0
    assert amounts.budget_change("$2.50").apply(9.0) == 2.5
    assert amounts.dollars("2") == 2.0
    for bad in ("", "-1", "+", "abc", "1e9", "--1", "1.2.3"):
        with pytest.raises(BadInput):
            amounts.budget_change(bad)
    with pytest.raises(BadInput, match="a \\+ adds"):
        amounts.dollars("+1")


def test_the_block_message_and_the_resume_prompt() -> None:
    assert budget.message(2, 2) == "budget reached: $2.00 of $2.00 — raise it or stop"
    assert budget.message(2.004, 1.999) == "budget reached: $2.00 of $2.00 — raise it or stop"
    assert budget.resume_prompt(3) == (
        "The budget was raised to $3.00; continue the task where you stopped."
    )


def test_whose_a_session_is() -> None:
    assert budget.user_of({"channel": "api", "principal": "alice"}) == "alice"
    assert budget.user_of({"channel": "slack", "user": "bob"}) == "bob"
    assert budget.user_of({"channel": "api", "principal": "anonymous"}) == "anonymous"
    assert budget.user_of({"principal": "alice", "user": "bob"}) == "bob"  # as tickets name it
    assert budget.user_of(None) is None
    assert budget.user_of({"principal": 3}) is None


def test_periods_are_utc_days_and_months() -> None:
    ts = datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC).timestamp()
    assert budgets.period_key("daily", ts) == "2026-11-28"
    assert budgets.period_key("monthly", ts) == "2026-11"
    assert budgets.period_key("daily", ts + 1) == "2026-11-29"
    assert budgets.period_start("daily", ts) == datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    assert budgets.period_start("monthly", ts) == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert budgets.period_key("monthly", ts + 3 * 86400) == "2026-12"


def test_alert_levels() -> None:
    assert [budgets.level(s, 20.0) for s in (0, 15.99, 16, 17.99, 18, 19.99, 20, 25)] == [
        0, 0, 80, 80, 90, 90, 100, 100,
    ]  # fmt: skip
    assert budgets.level(0, 0) == 100
    assert budgets.waiting("daily", 20, 20) == "waiting: daily budget reached ($20.00 of $20.00)"
    assert budgets.waiting("monthly", 5, 4, "alice") == (
        "waiting: alice's monthly budget reached ($5.00 of $4.00)"
    )


def test_held_sessions_and_their_reasons() -> None:
    nobody = budgets.Held()
    assert not nobody.active
    assert nobody.reason_for("alice") is None
    some = budgets.Held(users={"alice": "waiting: alice's …"})
    assert some.active
    assert (some.reason_for("alice"), some.reason_for("bob"), some.reason_for(None)) == (
        "waiting: alice's …",
        None,
        None,
    )
    assert budgets.Held(everyone="waiting: …").reason_for(None) == "waiting: …"


def test_a_partial_commit_says_so_in_its_subject_and_a_trailer() -> None:
    session = make_session(id="s9", prompt="fix the flaky test\n\nin ci")
    message = commit_message(session, partial="timeout")
    assert message == (
        "[partial] fix the flaky test\n\nfix the flaky test\n\nin ci\n\n"
        "TeleCoder-Session: s9\nTeleCoder-Partial: timeout\n"
    )
    subject = commit_message(make_session(prompt="y" * 80), partial="budget_reached")
    assert len(subject.splitlines()[0]) == 72
    assert "TeleCoder-Partial" not in commit_message(session)


def test_the_repository_budget() -> None:
    config = repoconfig.parse("budget:\n  usd: 2.5\n  max_time: 1h30m\n")
    assert (config.budget.usd, config.budget.max_time) == (2.5, 5400)
    assert repoconfig.parse("budget: {max_time: 90}").budget.max_time == 90
    assert repoconfig.parse("engine: shell").budget.usd is None
    with pytest.raises(BadInput, match=r"budget\.max_time"):
        repoconfig.parse("budget: {max_time: soon}")
    with pytest.raises(BadInput, match=r"budget\.usd"):
        repoconfig.parse("budget: {usd: -1}")
    with pytest.raises(BadInput, match=r"budget\.tokens"):
        repoconfig.parse("budget: {tokens: 5}")
