"""Times for --since/--until and ?since=&until=: spans back from now, dates, moments."""

from __future__ import annotations

import pytest

from telecoder.errors import BadInput
from telecoder.timerange import DAY, day_name, day_of, parse_range, parse_time

NOW = 1795132800.0 + 3600  # 2026-11-20 01:00 UTC


@pytest.mark.parametrize(
    ("text", "back"),
    [("30m", 1800), ("24h", DAY), ("7d", 7 * DAY), ("2w", 14 * DAY), (" 7D ", 7 * DAY)],
)
def test_spans_count_back_from_now(text, back):
    assert parse_time(text, now=NOW) == NOW - back


def test_a_date_starts_at_utc_midnight_and_ends_at_the_next():
    assert parse_time("2026-11-20", now=NOW) == 1795132800.0
    assert parse_time("2026-11-20", end=True, now=NOW) == 1795132800.0 + DAY


def test_a_moment_is_utc_unless_it_says():
    assert parse_time("2026-11-20T12:00") == 1795132800.0 + 12 * 3600
    assert parse_time("2026-11-20t12:00z") == 1795132800.0 + 12 * 3600
    assert parse_time("2026-11-20T12:00+02:00") == 1795132800.0 + 10 * 3600


@pytest.mark.parametrize("text", ["yesterday", "7x", "-7d", "2026-13-01", "", "7 days"])
def test_anything_else_is_refused_naming_the_option_and_the_forms(text):
    with pytest.raises(BadInput, match=r"until: .* is not a time: give 30m, 24h, 7d"):
        parse_time(text, name="until")


def test_a_range_must_run_forwards():
    assert parse_range(None, None) == (None, None)
    assert parse_range("2026-11-20", "2026-11-20", now=NOW) == (1795132800.0, 1795132800.0 + DAY)
    with pytest.raises(BadInput, match=r"since \(1d\) must be before until \(2d\)"):
        parse_range("1d", "2d", now=NOW)


def test_days():
    assert day_name(day_of(NOW)) == "2026-11-20"
    assert day_name(day_of(1795132800.0 - 0.001)) == "2026-11-19"


@pytest.mark.parametrize("text", ["9999-12-31", "0001-01-01T00:00+01:00", "999999w"])
def test_times_out_of_range_are_refused(text):
    with pytest.raises(BadInput, match="before 1970 or after 9999"):
        parse_time(text, end=True)
