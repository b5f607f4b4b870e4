"""Telegram as a channel: the real app (lifespan, long polling or the webhook route, the
conversation core, the store, embedded workers running sessions against a real git remote)
against the fake Bot API of tests/fakes/telegram.py, which plays the users."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from telecoder import registry
from telecoder.assemble import build_worker
from telecoder.channels.telegram import TelegramChannel, TelegramUnavailable
from telecoder.domain import NewSession, SessionStatus
from telecoder.engines.shell import ShellEngine
from telecoder.protocols import EngineCommand, EngineTask
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.fakes.telegram import (
    BOT_USERNAME,
    TOKEN,
    WEBHOOK_SECRET,
    FakeTelegram,
    Message,
    User,
)
from tests.server import client, serving, until

ALICE = User(111, "alice", "Alice")
BOB = User(222, "bob", "Bob")
MALLORY = User(666, "mallory", "Mallory")
GROUP = -1001234
OTHER_GROUP = -1009999


class FixEngine(ShellEngine):
    """An agent that makes the same small change whatever it is told."""

    name = "test-telegram-fix"

    def command(self, task: EngineTask) -> EngineCommand:
        return EngineCommand(
            argv=["/bin/sh", str(task.home / "fix.sh")],
            files={"fix.sh": "echo 'fixed by telecoder' >> README.md\necho done\n"},
        )


@pytest.fixture
def fix_engine() -> Iterator[str]:
    remove = registry.register("engines", FixEngine.name, FixEngine)
    yield FixEngine.name
    remove()


@pytest.fixture
def tg_settings(settings: Settings, fake_telegram: FakeTelegram, fix_engine: str) -> Settings:
    return settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(TOKEN),
            "telegram_api_url": fake_telegram.url,
            "telegram_allowed_users": (str(ALICE.id), str(BOB.id)),
            "telegram_allowed_chats": (str(GROUP),),
            "engine": fix_engine,
            "notify_poll_seconds": 0.05,
            "chat_idle_seconds": 3600,
        }
    )


@pytest.fixture
async def repo(store: Store, git_repo: GitRepo) -> GitRepo:
    await store.repos.add("app", str(git_repo.path), engine=None, priority=0)
    await store.repos.route("telegram", "*", "app")
    return git_repo


def working(settings: Settings, store: Store) -> Any:
    return create_app(settings, store, start_workers=build_worker(settings, store).run)


async def sessions(store: Store) -> list[Any]:
    return (await store.sessions.list(limit=100)).sessions


async def until_async(check: Any, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        await _sleep(0.05)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def replies_to(fake: FakeTelegram, chat: int, message: Message) -> list[Message]:
    return [
        m
        for m in fake.bot_messages(chat)
        if m.reply_to is not None and m.reply_to.message_id == message.message_id
    ]


def texts(fake: FakeTelegram, chat: int) -> list[str]:
    return [m.text for m in fake.bot_messages(chat)]


# --- a whole conversation, on a real port --------------------------------------------------------


async def test_a_dm_runs_a_session_with_one_progress_message_and_a_reply_continues_it(
    tg_settings, store, repo, fake_telegram
):
    fake = fake_telegram
    app = working(tg_settings, store)
    async with serving(app):
        asked = fake.dm(ALICE, "Add a line to the README")
        await until(lambda: len(fake.bot_messages(ALICE.id)) >= 2, seconds=90)
        (session,) = await sessions(store)
        assert session.thread == f"telegram:{ALICE.id}/{asked.message_id}"
        assert session.repo == str(repo.path)
        assert session.mode.value == "chat"
        assert session.origin["chat_id"] == ALICE.id
        assert "Add a line to the README" in session.prompt
        progress, final = fake.bot_messages(ALICE.id)
        # One progress message, sent once and edited (queued → running → the turn's outcome).
        assert progress.reply_to is not None
        assert progress.reply_to.message_id == asked.message_id
        assert progress.edits >= 1
        assert f"TeleCoder {session.id} — blocked" in progress.text
        assert "Changed: 1 file(s), +1" in progress.text
        # The turn's end as a reply, so Alice is notified.
        assert final.reply_to is not None
        assert final.reply_to.message_id == asked.message_id
        assert "Your turn: reply to this message to continue" in final.text
        assert "Changed: 1 file(s)" in final.text

        # A reply to the bot's message is the next turn of the same session.
        fake.dm(ALICE, "Once more, please", reply_to=final)
        await until(lambda: len(fake.bot_messages(ALICE.id)) >= 3, seconds=90)
        (same,) = await sessions(store)
        assert same.id == session.id
        again = fake.bot_messages(ALICE.id)
        assert len(again) == 3  # still one progress message, and a second turn's reply
        assert again[0].message_id == progress.message_id
        assert "Your turn" in again[2].text
        assert again[2].reply_to is not None
        assert again[2].reply_to.text == "Once more, please"  # who asked is told
        conversation = await store.sessions.conversation(session.id)
        assert conversation is not None
    assert "Once more, please" in json.dumps([e.data for e in await store.events.list(session.id)])


async def test_a_restart_neither_handles_an_update_again_nor_posts_a_second_progress_message(
    tg_settings, store, repo, fake_telegram
):
    fake = fake_telegram
    async with client(working(tg_settings, store)):
        asked = fake.dm(ALICE, "Add a line to the README")
        await until(lambda: len(fake.bot_messages(ALICE.id)) >= 2, seconds=90)
    handled = fake.last_update["update_id"]
    fake.push_update(dict(fake.last_update, update_id=handled))  # Telegram sends it again
    progress = fake.bot_messages(ALICE.id)[0]
    before = len(fake.called("getUpdates"))
    async with client(working(tg_settings, store)):
        await until(lambda: len(fake.called("getUpdates")) > before)
        assert fake.called("getUpdates")[before]["offset"] == handled + 1
        fake.dm(ALICE, "And the docs", reply_to=progress)
        await until(lambda: len(fake.bot_messages(ALICE.id)) >= 3, seconds=90)
    assert len(await sessions(store)) == 1
    bot = fake.bot_messages(ALICE.id)
    assert len(bot) == 3
    assert [m for m in bot if "— " in m.text] == [bot[0]]  # the one progress message
    assert replies_to(fake, ALICE.id, asked) == bot[:2]
    assert bot[2].reply_to is not None
    assert bot[2].reply_to.text == "And the docs"


# --- groups ----------------------------------------------------------------------------------


async def test_in_a_group_a_mention_starts_a_session_and_chatter_starts_nothing(
    tg_settings, store, repo, fake_telegram
):
    fake = fake_telegram
    async with client(create_app(tg_settings, store)):
        fake.group(GROUP, BOB, "anyone up for lunch?")
        chatter = fake.group(GROUP, ALICE, "the build is flaky again")
        fake.group(GROUP, BOB, "yes, since Tuesday", reply_to=chatter)
        mention = fake.group(GROUP, ALICE, "fix the flaky test", mention=True)
        found = await until_async(lambda: sessions(store))
        await until(lambda: len(fake.bot_messages(GROUP)) == 1)
        (session,) = found
        assert session.thread == f"telegram:{GROUP}/{mention.message_id}"
        assert session.prompt.count("fix the flaky test") == 1
        assert f"@{BOT_USERNAME}" not in session.prompt
        progress = fake.bot_messages(GROUP)[0]
        assert "queued" in progress.text

        # A reply to the bot, no mention needed: the same session (a chat takes messages
        # while it is queued).
        fake.group(GROUP, BOB, "also the one in test_api", reply_to=progress)
        await until_async(lambda: _messages(store, session.id, 1))
        # A reply to a message of the thread, without a mention: still the same thread.
        fake.group(GROUP, ALICE, "and please keep it short", reply_to=mention)
        await until_async(lambda: _messages(store, session.id, 2))
        # A command addressed with /cmd@bot.
        fake.group(GROUP, BOB, f"/status@{BOT_USERNAME}")
        await until(lambda: len(fake.bot_messages(GROUP)) == 2)
    assert len(await sessions(store)) == 1
    assert f"TeleCoder {session.id}" in fake.bot_messages(GROUP)[1].text


async def _messages(store: Store, session_id: str, count: int) -> bool:
    events = await store.events.list(session_id)
    return sum(1 for e in events if e.kind.value == "message") >= count


async def test_a_forum_topic_is_a_thread(tg_settings, store, repo, fake_telegram):
    fake = fake_telegram
    async with client(create_app(tg_settings, store)):
        fake.group(GROUP, ALICE, "rename the CLI flag", mention=True, topic=77)
        (session,) = await until_async(lambda: sessions(store))
        assert session.thread == f"telegram:{GROUP}/77"
        fake.group(GROUP, BOB, "to --output, please", topic=77)  # no mention, same topic
        await until_async(lambda: _messages(store, session.id, 1))
        fake.group(GROUP, BOB, "unrelated chatter", topic=78)
        fake.group(GROUP, ALICE, "and this is for you", mention=True, topic=79)
        await until_async(lambda: _count(store, 2))
    threads = sorted(s.thread for s in await sessions(store))
    assert threads == [f"telegram:{GROUP}/77", f"telegram:{GROUP}/79"]


async def _count(store: Store, n: int) -> bool:
    return len(await sessions(store)) >= n


# --- who may use it --------------------------------------------------------------------------


async def test_somebody_not_allowed_is_refused_once_and_starts_nothing(
    tg_settings, store, repo, fake_telegram
):
    fake = fake_telegram
    async with client(create_app(tg_settings, store)):
        fake.dm(MALLORY, "delete the repository")
        fake.dm(MALLORY, "please?")
        fake.group(OTHER_GROUP, ALICE, "fix it here", mention=True)  # allowed user, other chat
        fake.group(GROUP, MALLORY, "just chatting")  # not addressed: not even a refusal
        fake.group(GROUP, MALLORY, "fix it", mention=True)
        await until(lambda: len(fake.called("getUpdates")) >= 2)
        await until(lambda: len(fake.bot_messages(GROUP)) == 1)
        await until(lambda: len(fake.bot_messages(OTHER_GROUP)) == 1)
        await until(lambda: fake.last_update["update_id"] < _offset(fake))
    assert await sessions(store) == []
    (refusal,) = fake.bot_messages(MALLORY.id)  # once, though Mallory asked twice
    assert "not among them (by default nobody is)" in refusal.text
    assert "666 to TELECODER_TELEGRAM_ALLOWED_USERS" in refusal.text
    (elsewhere,) = fake.bot_messages(OTHER_GROUP)
    assert f"chat's id {OTHER_GROUP} to TELECODER_TELEGRAM_ALLOWED_CHATS" in elsewhere.text


def _offset(fake: FakeTelegram) -> int:
    return max(int(p.get("offset") or 0) for p in fake.called("getUpdates"))


async def test_without_allowed_users_nobody_may(settings, store, repo, fake_telegram, fix_engine):
    open_to_all = settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(TOKEN),
            "telegram_api_url": fake_telegram.url,
            "engine": fix_engine,
        }
    )
    async with client(create_app(open_to_all, store)):
        fake_telegram.dm(ALICE, "fix the typo")
        await until(lambda: len(fake_telegram.bot_messages(ALICE.id)) == 1)
    assert await sessions(store) == []
    assert "by default nobody is" in fake_telegram.bot_messages(ALICE.id)[0].text


# --- commands --------------------------------------------------------------------------------


async def test_commands(tg_settings, store, repo, fake_telegram):
    fake = fake_telegram
    said: list[str] = []

    async def ask(text: str, **options: Any) -> str:
        count = len(fake.bot_messages(ALICE.id))
        fake.dm(ALICE, text, **options)
        await until(lambda: len(fake.bot_messages(ALICE.id)) > count)
        await _sleep(0.1)  # a progress message may come with the answer
        news = [m.text for m in fake.bot_messages(ALICE.id)[count:]]
        said.extend(news)
        return "\n---\n".join(news)

    async with client(create_app(tg_settings, store)):
        assert "/run [repo:] task" in await ask("/help")
        assert "No session has started in this chat yet." in await ask("/status")
        assert "default model" in await ask("/model")
        assert "Your new sessions use gpt-x." in await ask("/model gpt-x")
        assert "use gpt-x" in await ask("/model")
        await ask("Add a line to the README")
        (first,) = await sessions(store)
        assert first.model == "gpt-x"
        assert first.tier is None  # a pinned model: the gateway does not route it by tier
        assert "default model again" in await ask("/model reset")

        ran = await ask("/run app: make the tests faster")
        assert "queued" in ran
        latest = (await sessions(store))[0]
        assert latest.id != first.id
        assert latest.model is None
        assert "make the tests faster" in latest.prompt
        assert latest.thread is not None
        assert latest.thread.startswith(f"telegram:{ALICE.id}/")

        status = await ask("/status")
        assert f"TeleCoder {latest.id} — queued" in status
        assert f"TeleCoder {first.id}" in await ask(f"/status {first.id}")
        assert f"Last events of {latest.id} (queued)" in await ask("/logs")
        assert f"Cancelled {latest.id}." in await ask("/cancel")
        assert (await store.sessions.get(latest.id)).status == SessionStatus.CANCELLED
        # Its outcome comes to the chat on its own: let it, so it is not taken for an answer.
        await until(lambda: any("🚫 Cancelled" in m.text for m in fake.bot_messages(ALICE.id)))
        await _sleep(0.1)
        assert "already cancelled" in await ask("/cancel")
        retried = await ask("/retry")
        assert f"Retrying {latest.id} as " in retried
        newest = (await sessions(store))[0]
        assert newest.parent_id == latest.id
        assert newest.status == SessionStatus.QUEUED
        assert newest.thread == latest.thread
        assert "Today (UTC): your 3 session(s) cost $0.00" in await ask("/costs")
        assert "I don't know /frobnicate" in await ask("/frobnicate")
        assert "no session" in (await ask("/status nosuchsession")).lower()
        # A session from elsewhere (the CLI) is not this chat's to see or stop.
        other = await store.sessions.create(NewSession(repo="r", prompt="p", engine="shell"))
        assert "started in this chat" in await ask(f"/status {other.id}")
        assert "started in this chat" in await ask(f"/cancel {other.id}")
        assert (await store.sessions.get(other.id)).status == SessionStatus.QUEUED
    assert len(await sessions(store)) == 4
    assert all(TOKEN not in text for text in said)


async def test_a_deleted_progress_message_is_replaced(tg_settings, store, repo, fake_telegram):
    fake = fake_telegram
    async with client(create_app(tg_settings, store)):
        fake.dm(ALICE, "Add a line to the README")
        await until(lambda: len(fake.bot_messages(ALICE.id)) == 1)
        (progress,) = fake.bot_messages(ALICE.id)
        fake.delete(ALICE.id, progress.message_id)
        fake.dm(ALICE, "/cancel")
        await until(lambda: sum("Cancelled" in t for t in texts(fake, ALICE.id)) >= 2)
        await until(lambda: any("— cancelled" in t for t in texts(fake, ALICE.id)))
    edits = fake.called("editMessageText")
    assert edits
    assert all(e["message_id"] == progress.message_id for e in edits)  # tried, then replaced
    assert len([t for t in texts(fake, ALICE.id) if "— cancelled" in t]) == 1


# --- the webhook -----------------------------------------------------------------------------


@pytest.fixture
def hook_settings(tg_settings: Settings) -> Settings:
    return tg_settings.model_copy(
        update={
            "telegram_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "public_url": "https://telecoder.example",
        }
    )


async def test_webhook_mode(hook_settings, store, repo, fake_telegram):
    fake = fake_telegram
    app = create_app(hook_settings, store)
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as http:
        await until(lambda: fake.webhook is not None)
        assert fake.webhook == {
            "url": "https://telecoder.example/api/channels/telegram/webhook",
            "secret_token": WEBHOOK_SECRET,
            "allowed_updates": ["message"],
        }
        fake.dm(ALICE, "Add a line to the README")
        body = json.dumps(fake.last_update).encode()
        url = "/api/channels/telegram/webhook"
        secret = "X-Telegram-Bot-Api-Secret-Token"
        wrong = await http.post(url, content=body, headers={secret: "not-the-secret"})
        missing = await http.post(url, content=body)
        assert (wrong.status_code, missing.status_code) == (401, 401)
        assert wrong.json()["error"] == "unauthorized"
        assert WEBHOOK_SECRET not in wrong.text
        assert await sessions(store) == []

        first = await http.post(url, content=body, headers={secret: WEBHOOK_SECRET})
        second = await http.post(url, content=body, headers={secret: WEBHOOK_SECRET})
        assert first.status_code == 200, first.text
        assert first.json()["action"] == "queued"
        assert second.json() == {
            "action": "duplicate",
            "reason": "seen before",
            "session_id": first.json()["session_id"],
        }
        bad = await http.post(url, content=b"{}", headers={secret: WEBHOOK_SECRET})
        assert bad.status_code == 422
        await until(lambda: len(fake.bot_messages(ALICE.id)) == 1)
    assert len(await sessions(store)) == 1
    assert fake.called("getUpdates") == []  # the webhook, not long polling


async def test_the_webhook_is_404_when_not_configured(tg_settings, settings, store):
    for configured in (settings, tg_settings):  # no token; a token but no webhook secret
        async with client(create_app(configured, store)) as c:
            response = await c.post(
                "/api/channels/telegram/webhook",
                content=b"{}",
                headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
            )
        assert response.status_code == 404
        assert "TELECODER_TELEGRAM_WEBHOOK_SECRET" in response.json()["detail"]


# --- the network -----------------------------------------------------------------------------


async def test_polling_survives_errors_and_stops_promptly(tg_settings, store, repo, fake_telegram):
    fake = fake_telegram
    fake.fail_updates(3)
    app = create_app(tg_settings, store)
    async with client(app):
        app.state.telegram.channel.backoff = (0.05, 0.1)
        fake.dm(ALICE, "Add a line to the README")
        await until_async(lambda: sessions(store))
        await until(lambda: len(fake.called("getUpdates")) >= 5)  # a long poll is waiting
        started = time.monotonic()
    assert time.monotonic() - started < 5  # the 25 s long poll did not hold the stop


async def test_the_token_is_never_in_an_error(fake_telegram):
    wrong = TelegramChannel("999:wrong-token-value", api_url=fake_telegram.url)
    with pytest.raises(TelegramUnavailable) as refused:
        await wrong.ready()
    assert "401 Unauthorized" in refused.value.message
    assert "wrong-token-value" not in refused.value.message
    gone = TelegramChannel(TOKEN, api_url="http://127.0.0.1:9")
    with pytest.raises(TelegramUnavailable) as unreachable:
        await gone.call("getMe")
    assert "ConnectError" in unreachable.value.message
    assert TOKEN not in unreachable.value.message
    await wrong.close()
    await gone.close()


async def test_address_turns_a_notify_target_into_an_origin(fake_telegram, tg_settings):
    channel = TelegramChannel.from_settings(tg_settings)
    await channel.memory.remember("user:alice", str(ALICE.id))
    assert await channel.address("@me", str(ALICE.id)) == {
        "channel": "telegram",
        "chat_id": ALICE.id,
        "thread": f"{ALICE.id}/notify",
    }
    assert (await channel.address(str(GROUP)))["chat_id"] == GROUP
    assert (await channel.address("@alice"))["chat_id"] == ALICE.id
    with pytest.raises(TelegramUnavailable, match="has not written to the bot"):
        await channel.address("@nobody")
    fake_telegram.dm(ALICE, "hello")  # the chat exists: the bot may write to it
    await channel.say(await channel.address("@me", str(ALICE.id)), "Session abc succeeded")
    assert fake_telegram.bot_messages(ALICE.id)[0].text == "Session abc succeeded"
    await channel.close()
