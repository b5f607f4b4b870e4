"""Asking for help and notifications: the question detector, notify targets, the messages."""

from __future__ import annotations

import pytest

from telecoder import notifications, questions
from telecoder.errors import BadInput
from tests.factories import make_session


@pytest.mark.parametrize(
    ("text", "changed", "heuristic", "expected"),
    [
        ("Done.\nQUESTION: Which port should the server use?", True, False, "Which port"),
        ("Done.\nQUESTION: Which port should the server use?", False, False, "Which port"),
        ("Looked around.\n\n**QUESTION:** keep the old API?", True, True, "keep the old API?"),
        ("I found two configs.\n\nShould I update both of them?", False, True, "Should I"),
        ("I found two configs.\n\nShould I update both of them?", False, False, None),
        ("I found two configs.\n\nShould I update both of them?", True, True, None),
        ("Why does this fail? Because the path was wrong. Fixed.", False, True, None),
        ("The answer is 42. Isn't it elegant?", False, True, None),
        ("Which branch do you want the fix on?", False, True, "Which branch"),
        ("", False, True, None),
        ("QUESTION:   ", False, True, None),
    ],
)
def test_the_detector_is_conservative(text, changed, heuristic, expected):
    found = questions.asked(text, changed=changed, heuristic=heuristic)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(expected)


def test_a_long_question_is_clipped_and_the_verify_question_says_how_to_go_on():
    found = questions.asked("QUESTION: " + "x" * 5000, changed=False, heuristic=False)
    assert found is not None
    assert len(found) == questions.MAX_QUESTION
    asked = questions.verify_question(
        "verification failed: 1 check failed; nothing was pushed\n- x"
    )
    assert asked.startswith("verification failed: 1 check failed\n- x")
    assert "How should I go on?" in asked


def test_who_may_be_asked():
    assert not questions.may_ask(make_session())
    assert not questions.may_ask(make_session(origin={"channel": "api", "principal": "ops"}))
    assert questions.may_ask(make_session(thread="slack:C1/1.2"))
    assert questions.may_ask(make_session(notify=("slack:U1",)))


def test_notify_me_and_targets():
    me = notifications.me_of(" slack:U123 , telegram:456,bogus, :x")
    assert me == {"slack": "U123", "telegram": "456"}
    known = {"slack", "telegram"}
    found = notifications.targets(
        ["slack:@me", "Telegram:-100200", "slack:U123", "slack:#deploys"], known=known, me=me
    )
    assert found == ("slack:U123", "telegram:-100200", "slack:#deploys")
    with pytest.raises(BadInput, match=r"cannot notify on 'jira'.*known: slack, telegram"):
        notifications.targets(["jira:me"], known=known, me=me)
    with pytest.raises(BadInput, match="none is configured"):
        notifications.targets(["slack:U1"], known=(), me=me)
    with pytest.raises(BadInput, match="TELECODER_NOTIFY_ME"):
        notifications.targets(["slack:@me"], known=known, me={})
    with pytest.raises(BadInput, match="not channel:who"):
        notifications.targets(["slack"], known=known, me=me)
    with pytest.raises(BadInput, match="at most 10"):
        notifications.targets([f"slack:U{i}" for i in range(11)], known=known, me=me)


def test_messages_say_what_happened_and_link_to_the_session():
    base = {"id": "abc123", "prompt": "fix   the\nlogin bug", "status": "blocked"}
    asks = notifications.message(
        "needs_input", {**base, "question": "Which provider?"}, "https://tc.example/"
    )
    assert asks.splitlines() == [
        "❓ TeleCoder session abc123 needs your input: fix the login bug",
        "It asks: Which provider?",
        'Answer: telecoder answer abc123 "…"',
        "https://tc.example/sessions/abc123",
    ]
    done = {**base, "status": "succeeded", "result": {"pr_url": "https://gh/pr/1"}}
    assert "Pull request: https://gh/pr/1" in notifications.message("finished", done)
    failed = {**base, "status": "failed", "error": "tests failed"}
    assert notifications.message("failed", failed).splitlines() == [
        "❌ TeleCoder session abc123 ended failed: fix the login bug",
        "tests failed",
    ]
