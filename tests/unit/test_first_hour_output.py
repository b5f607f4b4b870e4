"""What `run`, `show` and `logs` print reads as words: no `model=None`, no `1 files`, no Python
dict of a tool's input, no `attempt 5 of 3`; the no-token warning once."""

from __future__ import annotations

import logging

from telecoder.cli.output import attempt_text, diff_text, render_event
from telecoder.domain import Event, EventKind, Mode
from telecoder.server.auth import Tokens, check_bind
from tests.factories import make_session


def event(kind: EventKind, **data: object) -> Event:
    return Event(id=1, session_id="s", attempt=1, seq=1, ts=0.0, kind=kind, data=dict(data))


def test_progress_leaves_out_unset_fields():
    line = render_event(
        event(EventKind.PROGRESS, step="engine_started", engine="codex", model=None, resumed=False)
    )
    assert line is not None
    assert "engine=codex" in line
    assert "None" not in line
    assert "resumed" not in line
    again = render_event(event(EventKind.PROGRESS, step="engine_started", resumed=True))
    assert again is not None
    assert "resumed" in again
    assert "True" not in again


def test_tool_calls_show_the_command_not_a_python_dict():
    line = render_event(
        event(EventKind.TOOL_CALL, name="Bash", input={"command": "pytest -q\ntests/", "d": "x"})
    )
    assert line is not None
    assert "pytest -q tests/" in line
    assert "{'command'" not in line
    assert "\\n" not in line
    argv = render_event(event(EventKind.TOOL_CALL, name="shell", input={"cmd": ["ls", "a b"]}))
    assert argv is not None
    assert "ls 'a b'" in argv
    other = render_event(event(EventKind.TOOL_CALL, name="edit", input={"old": "a", "new": "b"}))
    assert other is not None
    assert '"old": "a"' in other  # JSON, not repr


def test_one_file_and_a_chat_turn_read_as_words():
    assert diff_text(1, 2, 0) == "1 file +2 -0"
    assert diff_text(3, 10, 4) == "3 files +10 -4"
    assert attempt_text(make_session(attempt=2, max_attempts=3)) == "2 of 3"
    assert attempt_text(make_session(attempt=5, max_attempts=3, mode=Mode.CHAT)) == "5"
    assert attempt_text(make_session(attempt=5, max_attempts=3)) == "5"


def test_the_no_token_warning_is_given_once(caplog):
    caplog.set_level(logging.WARNING, logger="telecoder.server.auth")
    check_bind(Tokens.parse(None), "127.0.0.9")
    check_bind(Tokens.parse(None), "127.0.0.9")  # serve, then the app it makes
    warnings = [r for r in caplog.records if "no TELECODER_API_TOKEN" in r.getMessage()]
    assert len(warnings) == 1
