"""Domain records: ids, statuses, the result's JSON round trip, a session as JSON."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from telecoder.domain import (
    TERMINAL_STATUSES,
    DiffStats,
    FailureKind,
    NewSession,
    Result,
    ResultType,
    SessionStatus,
    branch_for,
    iso,
    new_session_id,
)
from tests.factories import make_session

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_session_ids_are_short_readable_and_unique() -> None:
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    for sid in ids:
        assert re.fullmatch(r"[0-9a-hjkmnp-tv-z]{10}", sid), sid


def test_new_session_branch_defaults_to_its_id_and_keeps_a_given_one() -> None:
    new = NewSession(repo="/r", prompt="p", engine="shell")
    assert new.branch == branch_for(new.id) == f"telecoder/{new.id}"
    retry = NewSession(repo="/r", prompt="p", engine="shell", branch="telecoder/parent0001")
    assert retry.branch == "telecoder/parent0001"
    assert retry.id != "parent0001"


@pytest.mark.parametrize("status", list(SessionStatus))
def test_terminal_statuses(status: SessionStatus) -> None:
    terminal = {"succeeded", "failed", "cancelled", "dead", "skipped"}
    assert status.terminal is (status.value in terminal)
    assert (status in TERMINAL_STATUSES) is (status.value in terminal)


@pytest.mark.parametrize(
    "result",
    [
        Result(type=ResultType.TEXT, text="the answer is 42"),
        Result(
            type=ResultType.BRANCH,
            branch="telecoder/x",
            commit="a" * 40,
            pr_url="https://example.com/pr/7",
            pr_number=7,
            diff=DiffStats(files_changed=2, insertions=10, deletions=3),
        ),
        Result(type=ResultType.BRANCH, branch="telecoder/y", commit="b" * 40, partial=True),
        Result(type=ResultType.TEXT, failed_ref="telecoder/w-failed"),
        Result(
            type=ResultType.TEXT,
            text="42",
            outcome={
                "changed": "nothing",
                "verified": [],
                "uncertain": [],
                "next": "ask",
                "risk": None,
            },
        ),
        Result(
            type=ResultType.BRANCH,
            branch="telecoder/z",
            commit="c" * 40,
            pr_number=9,
            risk={"tier": "low", "label": "risk:low", "reasons": ["small"], "merged": True},
            review={"panel": ["a"], "answered": ["a"], "minority": [], "round": 0},
        ),
    ],
)
def test_result_round_trips_through_its_dict(result: Result) -> None:
    data = result.to_dict()
    assert set(data) == {
        "type",
        "branch",
        "commit",
        "pr_url",
        "pr_number",
        "text",
        "files_changed",
        "insertions",
        "deletions",
        "partial",
        "outcome",
        "risk",
        "review",
        "failed_ref",
    }
    assert data["type"] == result.type.value
    assert Result.from_dict(data) == result


def test_result_from_a_minimal_dict_has_zero_diff_stats() -> None:
    assert Result.from_dict({"type": "text"}) == Result(type=ResultType.TEXT)


def test_session_to_dict_shape_and_iso_times() -> None:
    result = Result(type=ResultType.TEXT, text="hi")
    session = make_session(
        status=SessionStatus.FAILED,
        result=result,
        failure_kind=FailureKind.TIMEOUT,
        error="too slow",
        started_at=1_700_000_002.0,
        finished_at=None,
        base_ref="main",
        origin={"channel": "cli"},
    )
    data = session.to_dict()
    for key in (
        "id",
        "status",
        "repo",
        "engine",
        "prompt",
        "branch",
        "result",
        "error",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    ):
        assert key in data
    assert data["status"] == "failed"
    assert data["mode"] == "task"
    assert data["failure_kind"] == "timeout"
    assert data["base"] == "main"
    assert data["result"] == result.to_dict()
    assert data["origin"] == {"channel": "cli"}
    # No outcome stored with the result: the one its error and result say.
    assert data["outcome"]["uncertain"][-1] == "Error: too slow"
    assert data["created_at"] == "2023-11-14T22:13:20.250Z"
    assert ISO_MS.match(data["updated_at"])
    assert ISO_MS.match(data["started_at"])
    assert data["finished_at"] is None
    # Everything in it is plain JSON.

    assert json.loads(json.dumps(data)) == data


def test_session_to_dict_without_result_or_failure() -> None:
    data = make_session().to_dict()
    assert data["result"] is None
    assert data["outcome"] is None  # queued: no outcome yet
    assert data["failure_kind"] is None
    assert data["status"] == "queued"


def test_iso_is_utc_with_milliseconds() -> None:
    assert iso(None) is None
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    moment = datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    assert iso(moment.timestamp()) == "2030-05-06T07:08:09.123Z"
