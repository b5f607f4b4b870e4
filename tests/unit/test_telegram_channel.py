"""The Telegram channel's pure parts: who a message is for, its thread, its text; the secret
token; the progress message's text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telecoder.channels.telegram import TelegramChannel
from telecoder.channels.telegram_text import Bot, final_text, progress_text
from telecoder.errors import WebhookSignatureInvalid

BOT = {"id": 9000, "is_bot": True, "first_name": "TeleCoder", "username": "telecoder_bot"}
ALICE = {"id": 111, "is_bot": False, "first_name": "Alice", "username": "alice"}
GROUP = {"id": -100123, "type": "supergroup", "title": "Team"}
PRIVATE = {"id": 111, "type": "private", "first_name": "Alice"}


@pytest.fixture
def channel() -> TelegramChannel:
    found = TelegramChannel("1:token", webhook_secret="s3cret")
    found.bot = Bot(id=9000, username="telecoder_bot")
    return found


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def update(text: str, chat: dict[str, Any] = GROUP, **message: Any) -> dict[str, Any]:
    body = {"message_id": 5, "from": ALICE, "chat": chat, "date": 0, "text": text, **message}
    return {"update_id": 42, "message": body}


def mention(text: str, handle: str = "@telecoder_bot") -> dict[str, Any]:
    at = text.index(handle)
    entity = {"type": "mention", "offset": units(text[:at]), "length": units(handle)}
    return update(text, entities=[entity])


def test_every_private_message_is_for_telecoder(channel):
    (inbound,) = channel.parse_update(update("fix the typo", PRIVATE))
    assert (inbound.addressed, inbound.direct) == (True, True)
    assert (inbound.thread, inbound.place, inbound.sender, inbound.key) == (
        "111/5",
        "111",
        "111",
        "42",
    )
    assert inbound.sender_name == "alice"
    assert inbound.reply["chat_id"] == 111
    assert inbound.reply["message_id"] == 5


def test_group_chatter_is_not_and_a_mention_is(channel):
    assert channel.parse_update(update("lunch?")) == []
    (inbound,) = channel.parse_update(mention("🎉🎉 @telecoder_bot fix the flaky test 🎉"))
    assert inbound.addressed
    assert not inbound.direct
    assert inbound.text == "🎉🎉  fix the flaky test 🎉"
    assert channel.parse_update(mention("@other_bot fix it", "@other_bot")) == []


def test_a_text_mention_and_a_reply_to_the_bot_address_it(channel):
    text = "TeleCoder please rebase"
    entity = {"type": "text_mention", "offset": 0, "length": 9, "user": BOT}
    (named,) = channel.parse_update(update(text, entities=[entity]))
    assert named.addressed
    assert named.text == "please rebase"
    replied = {"message_id": 3, "from": BOT, "chat": GROUP, "date": 0, "text": "queued"}
    (reply,) = channel.parse_update(update("also the docs", reply_to_message=replied))
    assert reply.addressed
    assert reply.reply["reply_to"] == 3


def test_a_reply_to_somebody_else_may_be_in_a_thread(channel):
    replied = {"message_id": 3, "from": ALICE, "chat": GROUP, "date": 0, "text": "hm"}
    (inbound,) = channel.parse_update(update("agreed", reply_to_message=replied))
    assert not inbound.addressed
    assert inbound.reply["reply_to"] == 3


async def test_a_reply_belongs_to_the_thread_of_the_message_it_answers(channel):
    await channel.remember_message(-100123, 3, "-100123/1")
    replied = {"message_id": 3, "from": BOT, "chat": GROUP, "date": 0, "text": "queued"}
    (inbound,) = channel.parse_update(update("also the docs", reply_to_message=replied))
    assert (await channel.resolve(inbound)).thread == "-100123/1"
    unknown = {"message_id": 4, "from": ALICE, "chat": GROUP, "date": 0, "text": "bug"}
    (other,) = channel.parse_update(update("@telecoder_bot fix", reply_to_message=unknown))
    assert (await channel.resolve(other)).thread == "-100123/4"  # rooted at what it answers


def test_a_forum_topic_is_the_thread(channel):
    (inbound,) = channel.parse_update(
        update("more details", message_thread_id=77, is_topic_message=True)
    )
    assert inbound.thread == "-100123/77"
    assert not inbound.addressed


def test_commands(channel):
    entity = {"type": "bot_command", "offset": 0, "length": units("/status@telecoder_bot")}
    (ours,) = channel.parse_update(update("/status@telecoder_bot abc", entities=[entity]))
    assert ours.addressed
    assert ours.text == "/status abc"
    (plain,) = channel.parse_update(update("/logs"))
    assert plain.addressed
    other = {"type": "bot_command", "offset": 0, "length": units("/status@other_bot")}
    assert channel.parse_update(update("/status@other_bot", entities=[other])) == []


def test_bots_edits_and_empty_messages_start_nothing(channel):
    assert channel.parse_update(update("hi", PRIVATE, **{"from": BOT})) == []
    assert channel.parse_update({"update_id": 1, "edited_message": {"text": "x"}}) == []
    assert channel.parse_update(update("   ", PRIVATE)) == []
    assert channel.parse({}, b"not json") == []
    assert len(channel.parse({}, json.dumps(update("hi", PRIVATE)).encode())) == 1


def test_the_secret_token(channel):
    channel.verify({"X-Telegram-Bot-Api-Secret-Token": "s3cret"}, b"{}", 0)
    for headers in ({"X-Telegram-Bot-Api-Secret-Token": "s3cre"}, {}):
        with pytest.raises(WebhookSignatureInvalid):
            channel.verify(headers, b"{}", 0)
    with pytest.raises(WebhookSignatureInvalid):
        TelegramChannel("1:t").verify({"X-Telegram-Bot-Api-Secret-Token": ""}, b"{}", 0)


def test_the_progress_message_says_where_the_session_stands():
    base = {"id": "abc", "repo": "/r", "origin": {"repo_name": "app"}}
    running = progress_text({**base, "status": "running", "activity": "bash pytest -q"})
    assert running.splitlines() == ["⚙️ TeleCoder abc — running", "repo: app", "now: bash pytest -q"]
    blocked = {**base, "status": "blocked", "question": "Which branch?"}
    assert "question: Which branch?" in progress_text(blocked)
    assert "Which branch?" in final_text(blocked)
    done = {
        **base,
        "status": "succeeded",
        "result": {"pr_url": "https://github.com/acme/app/pull/7"},
        "outcome": {"changed": "1 file(s)", "verified": [{"command": "pytest"}], "next": "merge"},
    }
    text = progress_text(done)
    assert "PR: https://github.com/acme/app/pull/7" in text
    assert "Changed: 1 file(s)" in text
    assert "Verified: pytest" in text
    assert final_text(done).startswith("✅ Done (abc).")
