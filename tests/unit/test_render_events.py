"""Events as the dashboard shows them: a tool call in one line, progress in words, an error once."""

from __future__ import annotations

import pytest

from telecoder.domain import Event, EventKind
from telecoder.server.render import Timeline, fields_text, one_line, tool_preview, view


def event(kind: EventKind, seq: int = 1, **data) -> Event:
    return Event(id=seq, session_id="s1", attempt=1, seq=seq, ts=0.0, kind=kind, data=data)


@pytest.mark.parametrize(
    ("name", "args", "line"),
    [
        ("Bash", {"command": "pytest -q", "description": "run the tests"}, "$ pytest -q"),
        ("shell", {"command": ["bash", "-lc", "ls -la"]}, "$ bash -lc 'ls -la'"),
        ("exec", {"cmd": "make lint"}, "$ make lint"),
        ("Edit", {"file_path": "src/app.py", "old_string": "a", "new_string": "b"}, "src/app.py"),
        ("read_file", {"path": "README.md"}, "README.md"),
        ("Grep", {"pattern": "TODO", "path": "src"}, "TODO"),
        ("bash", "echo one\necho two", "$ echo one…"),
        ("think", "just a note", "just a note"),
        ("todo", {"items": [1, 2]}, '{"items": [1, 2]}'),
        ("noop", {}, ""),
        ("noop", None, ""),
    ],
)
def test_a_tool_call_is_one_line(name, args, line):
    assert tool_preview(name, args) == line


def test_a_long_line_is_cut():
    assert one_line("x" * 500, 20) == "x" * 19 + "…"
    assert one_line("\n\n  first  \nsecond") == "first…"


def test_a_tool_call_view_keeps_its_arguments_below_its_line():
    v = view(event(EventKind.TOOL_CALL, name="Bash", input={"command": "pytest -q\n-x"}))
    assert (v.title, v.preview) == ("→ Bash", "$ pytest -q…")
    assert '"command": "pytest -q\\n-x"' in v.body  # the whole call, when opened


def test_progress_reads_as_words():
    v = view(event(EventKind.PROGRESS, step="workspace_ready", base="main", cached=True, n=None))
    assert (v.title, v.body) == ("workspace ready", "base main, cached")
    assert fields_text({"files": ["a", "b"], "ok": False}) == 'files ["a", "b"]'
    chain = view(event(EventKind.CHAIN, message="on_success: spawned abc (depth 1)", depth=1))
    assert (chain.title, chain.body) == ("chain", "on_success: spawned abc (depth 1)")


def test_an_error_is_shown_once():
    error = event(EventKind.ERROR, 1, failure_kind="timeout", message="ran past its limit")
    status = event(EventKind.STATUS, 2, status="failed", error="ran past its limit")
    # Not yet in the head (it runs): the error event says it, the status does not repeat it.
    live = Timeline(None)
    first, then = live.view(error), live.view(status)
    assert (first.title, first.body) == ("error (timeout)", "ran past its limit")
    assert then.body == ""
    # The head shows it now: the error event is shown again, without it.
    earlier = live.knows("ran past its limit")
    assert earlier is error
    assert live.view(earlier).title == "error (timeout): shown above"
    assert live.knows("ran past its limit") is None  # once
    # The page of the ended session: the head says it, the events point there.
    page = Timeline("ran past its limit").views([error, status])
    assert [(v.title, v.body) for v in page] == [
        ("error (timeout): shown above", ""),
        ("failed", ""),
    ]
    # Another error (an earlier attempt's) is shown where it happened.
    other = Timeline("ran past its limit").view(event(EventKind.ERROR, 3, message="crashed"))
    assert other.body == "crashed"


def test_a_warning_is_not_an_error():
    message = "Model metadata for `fake-model` not found. Defaulting to fallback metadata"
    v = view(event(EventKind.WARNING, message=message))
    assert (v.title, v.body, v.css) == ("warning", message, "warning")
    assert "bad" not in v.css
