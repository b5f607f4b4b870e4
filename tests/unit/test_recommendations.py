"""Reading reviewers' recommendations and tallying them."""

from __future__ import annotations

import pytest

from telecoder.recommendations import Label, Severity, parse, tally


def test_parse_reads_the_last_json_list_fenced_or_not():
    text = (
        "I looked.\n```json\n"
        '{"recommendations": [{"title": "SQL injection in query", "rationale": "concat",'
        ' "severity": "high", "location": "app/db.py:12"}]}\n```\n'
    )
    (rec,) = parse("r1", text)
    assert (rec.title, rec.severity, rec.file, rec.line) == (
        "SQL injection in query",
        Severity.HIGH,
        "app/db.py",
        12,
    )
    assert (
        parse("r1", 'noise [] then [{"title": "x", "location": {"file": "a", "line": 3}}]')[0].line
        == 3
    )
    assert parse("r1", "Nothing found: []") == []
    with pytest.raises(ValueError, match="no JSON list"):
        parse("r1", "looks good to me")
    with pytest.raises(ValueError, match="unknown severity"):
        parse("r1", '[{"title": "x", "severity": "urgent"}]')


def _recs(reviewer: str, *items: tuple[str, str, int, str]):
    return [
        parse(reviewer, f'[{{"title": "{t}", "location": "{f}:{n}", "severity": "{s}"}}]')[0]
        for t, f, n, s in items
    ]


def test_tally_groups_equivalent_recommendations_by_location_and_title():
    answers = {
        "a": _recs(
            "a", ("Unchecked None in parse", "p.py", 10, "high"), ("Typo in docs", "R", 1, "low")
        ),
        "b": _recs(
            "b", ("parse: unchecked None", "p.py", 12, "medium"), ("Add a test", "t.py", 5, "low")
        ),
        "c": _recs(
            "c",
            ("Unchecked none in parse()", "p.py", 9, "critical"),
            ("Add test", "t.py", 7, "info"),
        ),
    }
    result = tally(answers, panel=["a", "b", "c"])
    (consensus,) = result.labelled(Label.CONSENSUS)
    assert consensus.reviewers == ["a", "b", "c"]
    assert consensus.severity == Severity.HIGH
    (majority,) = result.labelled(Label.MAJORITY)
    assert majority.reviewers == ["b", "c"]
    assert majority.severity == Severity.INFO
    (minority,) = result.labelled(Label.MINORITY)
    assert minority.reviewers == ["a"]
    assert [g.first.title for g in result.blocking(Severity.MEDIUM)] == ["Unchecked None in parse"]


def test_a_tally_of_two_says_so_and_far_lines_stay_apart():
    answers = {
        "a": _recs("a", ("Leak in loop", "x.py", 10, "high")),
        "c": _recs("c", ("Leak in loop", "x.py", 40, "high")),
    }
    result = tally(answers, panel=["a", "b", "c"])
    assert result.to_dict()["missing"] == ["b"]
    assert result.answered == ["a", "c"]
    assert len(result.labelled(Label.MINORITY)) == 2
    merged = tally(answers, panel=["a", "b", "c"], merge=lambda groups: [(0, 1)])
    assert [g.label for g in merged.groups] == [Label.CONSENSUS]
