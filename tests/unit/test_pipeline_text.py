"""The pipeline's text helpers: commit messages, decoding output lines, clipping event data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telecoder.endings import commit_message
from telecoder.recorder import MAX_TEXT, decode
from telecoder.recorder import clip as _clip
from tests.factories import make_session


def test_commit_message_of_a_one_line_prompt() -> None:
    message = commit_message(make_session(id="s1", prompt="  fix the flaky test  "))
    assert message == "fix the flaky test\n\nTeleCoder-Session: s1\n"


def test_commit_message_subject_is_the_first_line_and_body_the_whole_prompt() -> None:
    prompt = "Rename colour to color\n\nEverywhere in README.md and docs/."
    message = commit_message(make_session(id="s2", prompt=prompt))
    subject, blank, rest = message.split("\n", 2)
    assert subject == "Rename colour to color"
    assert blank == ""
    assert rest == f"{prompt}\n\nTeleCoder-Session: s2\n"


def test_commit_message_cuts_a_long_subject_at_72_characters() -> None:
    first = "word " * 30  # 150 characters
    message = commit_message(make_session(id="s3", prompt=first))
    subject = message.split("\n", 1)[0]
    assert len(subject) <= 72
    assert subject.endswith("…")
    assert subject[:-1] == first.strip()[:71].rstrip()
    # The full prompt survives in the body, and the trailer closes the message.
    assert first.strip() in message
    assert message.endswith("\n\nTeleCoder-Session: s3\n")


def test_commit_message_keeps_a_subject_of_exactly_72_characters() -> None:
    first = "x" * 72
    message = commit_message(make_session(id="s4", prompt=first))
    assert message == f"{first}\n\nTeleCoder-Session: s4\n"
    longer = commit_message(make_session(id="s4", prompt="x" * 73))
    assert longer.split("\n", 1)[0] == "x" * 71 + "…"


def test_commit_message_of_an_empty_prompt() -> None:
    message = commit_message(make_session(id="s5", prompt="   "))
    assert message == "TeleCoder change\n\nTeleCoder-Session: s5\n"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain ascii", "plain ascii"),
        ("caf\u00e9 \u2713".encode(), "caf\u00e9 \u2713"),
        (b"bad \xff\xfe end", "bad \\xff\\xfe end"),
        (b"nul\x00here", "nul\\x00here"),
        (b"\xe2\x82", "\\xe2\\x82"),  # a truncated multibyte sequence
        (b"", ""),
    ],
)
def test_decode(raw: bytes, text: str) -> None:
    decoded = decode(raw)
    assert decoded == text
    assert "\x00" not in decoded
    decoded.encode("utf-8")  # no lone surrogates: storable anywhere


def test_decode_of_random_garbage_is_storable_json() -> None:
    garbage = bytes(range(256)) * 4
    decoded = decode(garbage)
    assert "\x00" not in decoded
    assert json.loads(json.dumps(decoded, ensure_ascii=False)) == decoded
    decoded.encode("utf-8")


def test_clip_leaves_short_values_alone() -> None:
    data = {"a": "short", "n": 5, "f": 1.5, "none": None, "list": ["x", 1], "ok": True}
    assert _clip(data) == data
    assert _clip("x" * MAX_TEXT) == "x" * MAX_TEXT


def test_clip_cuts_long_strings_with_a_marker() -> None:
    clipped = _clip("y" * (MAX_TEXT + 123))
    assert clipped == "y" * MAX_TEXT + "… [123 more characters]"


def test_clip_reaches_into_nested_data() -> None:
    long = "z" * (MAX_TEXT * 3)
    data: dict[str, Any] = {
        "outer": {"inner": [long, {"deep": long}], "t": (long, "s")},
        "keep": "k",
    }
    clipped = _clip(data)
    marker = f"… [{2 * MAX_TEXT} more characters]"
    assert clipped["keep"] == "k"
    assert clipped["outer"]["inner"][0] == "z" * MAX_TEXT + marker
    assert clipped["outer"]["inner"][1]["deep"] == "z" * MAX_TEXT + marker
    assert clipped["outer"]["t"] == ["z" * MAX_TEXT + marker, "s"]
    assert len(json.dumps(clipped)) < 4 * MAX_TEXT
    # The input is not modified.
    assert data["outer"]["inner"][0] is long


def test_a_chat_turn_commits_under_its_message() -> None:
    session = make_session(id="s9", prompt="first task")
    message = commit_message(session, "now also update the docs")
    assert message == "now also update the docs\n\nTeleCoder-Session: s9\n"
