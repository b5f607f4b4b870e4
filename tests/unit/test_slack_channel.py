"""The Slack channel's pure parts: Slack's v0 signature, Events API payloads → Inbound, the
Block Kit it writes."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from telecoder.channels import slack_blocks
from telecoder.channels.slack import SlackChannel, parse_payload, verify, where
from telecoder.errors import BadInput, WebhookSignatureInvalid

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT = "U0BOT"
NOW = 1_764_000_000.0


def envelope(event: dict[str, Any], event_id: str = "Ev1") -> dict[str, Any]:
    return {
        "type": "event_callback",
        "event_id": event_id,
        "event": event,
        "authorizations": [{"user_id": BOT, "is_bot": True}],
    }


def signed(body: bytes, stamp: float = NOW) -> dict[str, str]:
    base = f"v0:{int(stamp)}:".encode() + body
    digest = hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(int(stamp)), "X-Slack-Signature": f"v0={digest}"}


def test_slacks_own_example_signature_verifies():
    # api.slack.com/authentication/verifying-requests-from-slack, "Validating a request".
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
        b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121"
        b".803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    verify(SECRET, headers, body, now=1531420618 + 10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("stale", "more than 300 s from now"),
        ("future", "more than 300 s from now"),
        ("body", "does not match"),
        ("missing", "missing the X-Slack-Request-Timestamp"),
        ("not-a-number", "not a number"),
    ],
)
def test_a_bad_signature_is_refused(change, message):
    body = b'{"type":"event_callback"}'
    headers = signed(body)
    now = NOW
    if change == "stale":
        now = NOW + 301
    elif change == "future":
        now = NOW - 301
    elif change == "body":
        body = b'{"type":"url_verification"}'
    elif change == "missing":
        del headers["X-Slack-Signature"]
    else:
        headers["X-Slack-Request-Timestamp"] = "yesterday"
    with pytest.raises(WebhookSignatureInvalid, match=message):
        verify(SECRET, headers, body, now=now)
    verify(SECRET, signed(b"{}"), b"{}", now=NOW + 299)  # inside the window


def test_a_channel_without_a_signing_secret_accepts_nothing():
    channel = SlackChannel(bot_token="xoxb-1")
    with pytest.raises(WebhookSignatureInvalid, match="no Slack signing secret"):
        channel.verify(signed(b"{}"), b"{}", NOW)


def test_a_mention_is_addressed_and_loses_the_mention():
    event = {
        "type": "app_mention",
        "user": "U0ALICE",
        "text": f"<@{BOT}> fix &lt;b&gt; &amp; <@{BOT}|telecoder> go",
        "ts": "1.1",
        "channel": "C1",
    }
    (found,) = parse_payload(envelope(event))
    assert (found.channel, found.key, found.thread, found.place) == ("slack", "Ev1", "C1/1.1", "C1")
    assert found.text == "fix <b> &  go"
    assert (found.addressed, found.direct, found.sender) == (True, False, "U0ALICE")
    assert found.reply == {"channel_id": "C1", "thread_ts": "1.1"}
    assert where({**found.reply, "channel": "slack"}) == ("C1", "1.1")


def test_thread_replies_direct_messages_and_files():
    reply = {"type": "message", "channel_type": "channel", "user": "U1", "text": "more",
             "ts": "2.2", "thread_ts": "1.1", "channel": "C1"}  # fmt: skip
    (found,) = parse_payload(envelope(reply))
    assert (found.thread, found.addressed) == ("C1/1.1", False)
    assert found.reply == {"channel_id": "C1", "thread_ts": "1.1"}
    files = [{"name": "log.txt"}, {"id": "F"}]
    dm = {"type": "message", "channel_type": "im", "user": "U1", "text": "hi", "ts": "3.3",
          "channel": "D1", "subtype": "file_share", "files": files}  # fmt: skip
    (found,) = parse_payload(envelope(dm))
    assert (found.addressed, found.direct, found.thread) == (True, True, "D1/3.3")
    assert found.attachments == ("log.txt",)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "message", "channel_type": "channel", "user": "U1", "text": f"<@{BOT}> x"},
        {"type": "app_mention", "user": "U1", "text": f"<@{BOT}> x", "channel": "D1"},
        {"type": "message", "user": "U1", "text": "x", "bot_id": "B2"},
        {"type": "message", "subtype": "bot_message", "text": "x", "bot_id": "B2"},
        {"type": "message", "subtype": "message_changed", "message": {"text": "x"}},
        {"type": "message", "subtype": "message_deleted", "user": "U1"},
        {"type": "message", "subtype": "channel_join", "user": "U1", "text": "joined"},
        {"type": "message", "user": BOT, "text": "my own"},
        {"type": "reaction_added", "user": "U1"},
    ],
)
def test_what_is_not_a_message_for_telecoder_is_dropped(event):
    event = {"channel": "C1", "ts": "1.1", **event}
    assert parse_payload(envelope(event)) == []


def test_only_event_callbacks_are_parsed():
    assert parse_payload({"type": "url_verification", "challenge": "x"}) == []
    channel = SlackChannel(bot_token="xoxb-1", signing_secret=SECRET)
    with pytest.raises(BadInput, match="not JSON"):
        channel.parse({}, b"{")
    assert channel.parse({}, json.dumps({"type": "app_rate_limited"}).encode()) == []


def test_status_blocks_follow_the_session():
    session: dict[str, Any] = {
        "id": "s1",
        "status": "running",
        "repo": "/r",
        "origin": {"repo_name": "app"},
        "activity": "Bash <script>",
    }
    running = slack_blocks.status_blocks(session, "https://tc.example/")
    texts = json.dumps(running)
    assert "*started*" in texts
    assert "<https://tc.example/sessions/s1|dashboard>" in texts
    assert "Now: Bash &lt;script&gt;" in texts
    assert running[-1]["elements"][0]["action_id"] == slack_blocks.CANCEL
    blocked = slack_blocks.status_blocks({**session, "status": "blocked", "question": "Which?"})
    assert "*Question:* Which?" in json.dumps(blocked)
    result = {"type": "pull_request", "pr_url": "https://gh/pr/1", "commit": "abc",
              "branch": "b", "text": "**done** <!channel>"}  # fmt: skip
    done = {**session, "status": "succeeded", "result": result}
    ended = slack_blocks.status_blocks(done)
    assert "*Pull request:* <https://gh/pr/1>" in json.dumps(ended)
    assert "*Changed:*" in json.dumps(ended)
    assert ended[-1]["elements"][0]["action_id"] == slack_blocks.RETRY
    text, told = slack_blocks.outcome_blocks(done)
    assert text.endswith("https://gh/pr/1")
    assert "&lt;!channel&gt;" in json.dumps(told)  # what the agent said mentions nobody
    long = slack_blocks.outcome_blocks({**done, "result": {**result, "text": "x" * 9000}})[1]
    assert all(len(b["text"]["text"]) <= 3000 for b in long)
