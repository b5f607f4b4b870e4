"""Slack as a channel, end to end: the real app on a real port with an embedded worker, the
fake Slack (Web API, Socket Mode, events signed as Slack signs them), a real repository and its
bare remote. Sessions really run (sandbox, git push) with an engine that makes a fixed change."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from telecoder import registry
from telecoder.assemble import build_worker
from telecoder.channels.slack import SlackAPIError, SlackChannel
from telecoder.channels.slack_blocks import CANCEL, OUTCOME_EVENT, RETRY, STATUS_EVENT
from telecoder.engines.shell import ShellEngine
from telecoder.protocols import EngineCommand, EngineTask
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    FakeSlack,
    Message,
)
from tests.server import serving, until

CHANNEL = "C0DEV"
PUBLIC = "https://telecoder.example"


class SlackFixEngine(ShellEngine):
    """An agent that adds a line to the README on every turn and says so."""

    name = "test-slack-fix"

    def command(self, task: EngineTask) -> EngineCommand:
        script = (
            "n=$(grep -c 'fixed by telecoder' README.md)\n"
            'echo "fixed by telecoder ($n)" >> README.md\n'
            'echo "I added line $n to the README."\n'
        )
        return EngineCommand(argv=["/bin/sh", str(task.home / "fix.sh")], files={"fix.sh": script})


@pytest.fixture
def fix_engine() -> Iterator[str]:
    remove = registry.register("engines", SlackFixEngine.name, SlackFixEngine)
    yield SlackFixEngine.name
    remove()


@pytest.fixture
def slack_settings(settings: Settings, fake_slack: FakeSlack, fix_engine: str) -> Settings:
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(BOT_TOKEN),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": fake_slack.api_url,
            "public_url": PUBLIC,
            "engine": fix_engine,
            "forge": "local",
            "notify_poll_seconds": 0.05,
        }
    )


@pytest.fixture
async def routed(store: Store, git_repo: GitRepo) -> str:
    await store.repos.add("app", str(git_repo.path), engine=None, priority=0)
    await store.repos.route("slack", CHANNEL, "app")
    return "app"


def app_of(settings: Settings, store: Store, *, workers: bool = True):
    runner = build_worker(settings, store).run if workers else None
    return create_app(settings, store, start_workers=runner)


async def send(url: str, fake: FakeSlack, envelope: Any, **options: Any) -> httpx.Response:
    body = json.dumps(envelope).encode()
    async with httpx.AsyncClient() as c:
        return await c.post(
            f"{url}/api/channels/slack/events", content=body, headers=fake.signed(body, **options)
        )


async def click(url: str, fake: FakeSlack, message: Message, action: str) -> httpx.Response:
    body = urlencode({"payload": json.dumps(fake.click(message, action))}).encode()
    headers = fake.signed(body, content_type="application/x-www-form-urlencoded")
    async with httpx.AsyncClient() as c:
        return await c.post(f"{url}/api/channels/slack/actions", content=body, headers=headers)


async def sessions_of(store: Store):
    return (await store.sessions.list(limit=100)).sessions


def status_message(fake: FakeSlack, channel: str, ts: str, session_id: str) -> Message:
    (found,) = [
        m
        for m in fake.thread(channel, ts)
        if (m.metadata or {}).get("event_type") == STATUS_EVENT
        and m.metadata["event_payload"]["session"] == session_id
    ]
    return found


def outcomes(fake: FakeSlack, channel: str, ts: str) -> list[Message]:
    return [
        m for m in fake.thread(channel, ts) if (m.metadata or {}).get("event_type") == OUTCOME_EVENT
    ]


async def wait_status(store: Store, session_id: str, status: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        session = await store.sessions.get(session_id)
        if session.status.value == status:
            return session
        if session.status.terminal:
            raise AssertionError(f"{session_id} ended {session.status.value}: {session.error}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"{session_id} never became {status}")


# --- a whole conversation ------------------------------------------------------------------------


async def test_a_mention_runs_a_session_and_the_thread_follows_it(
    slack_settings, store, fake_slack, routed, git_repo
):
    fake = fake_slack
    async with serving(app_of(slack_settings, store)) as url:
        parent, envelope = fake.message(CHANNEL, "please fix the typo &lt;now&gt;")
        answer = await send(url, fake, envelope)
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] == "queued"
        session_id = answer.json()["session_id"]

        session = await store.sessions.get(session_id)
        assert session.repo == str(git_repo.path)
        assert session.mode.value == "chat"
        assert session.thread == f"slack:{CHANNEL}/{parent.ts}"
        assert "please fix the typo <now>" in session.prompt
        assert f"<@{BOT_USER}>" not in session.prompt
        assert session.origin["channel_id"] == CHANNEL
        assert session.origin["thread_ts"] == parent.ts
        assert BOT_TOKEN not in json.dumps(session.origin)

        first = await wait_status(store, session_id, "blocked")
        await until(lambda: len(outcomes(fake, CHANNEL, parent.ts)) == 1, seconds=10)
        status = status_message(fake, CHANNEL, parent.ts, session_id)
        assert status.thread_ts == parent.ts
        history = [*status.edits, status.shown]
        assert "*queued*" in history[0]
        assert any("*started*" in text for text in history)
        assert "*waiting for you*" in status.shown
        assert "*Changed:* 1 file(s), +1 −0" in status.shown
        assert f"{PUBLIC}/sessions/{session_id}" in status.shown
        assert "[Cancel]" in status.shown
        (said,) = outcomes(fake, CHANNEL, parent.ts)
        assert "I added line 0 to the README." in said.shown
        assert git_repo.remote_git("show", f"{first.branch}:README.md").endswith(
            "fixed by telecoder (0)"
        )

        # A reply in the thread (no mention) is the next turn of the same session.
        _, reply = fake.message(CHANNEL, "and once more", thread_ts=parent.ts, mention=False)
        answer = await send(url, fake, reply)
        assert answer.json() == {"action": "continued", "session_id": session_id}
        await until(lambda: len(outcomes(fake, CHANNEL, parent.ts)) == 2, seconds=60)
        second = await store.sessions.get(session_id)
        assert (second.status.value, second.attempt) == ("blocked", 2)
        assert git_repo.remote_git("show", f"{first.branch}:README.md").endswith(
            "fixed by telecoder (1)"
        )
        assert "I added line 1 to the README." in outcomes(fake, CHANNEL, parent.ts)[1].shown

        # Cancel from the status message's button: the chat ends, the thread is told once.
        status = status_message(fake, CHANNEL, parent.ts, session_id)
        answer = await click(url, fake, status, CANCEL)
        assert answer.json() == {"action": "cancelled", "session_id": session_id}
        await wait_status(store, session_id, "cancelled")
        await until(
            lambda: "*cancelled*" in status_message(fake, CHANNEL, parent.ts, session_id).shown,
            seconds=10,
        )
        await until(lambda: len(outcomes(fake, CHANNEL, parent.ts)) == 3, seconds=10)
        await until(
            lambda: any("cancelled session" in m.text for m in fake.thread(CHANNEL, parent.ts)),
            seconds=10,
        )
        assert "[Retry]" in status_message(fake, CHANNEL, parent.ts, session_id).shown

    thread = fake.thread(CHANNEL, parent.ts)
    assert len([m for m in thread if (m.metadata or {}).get("event_type") == STATUS_EVENT]) == 1
    assert len(outcomes(fake, CHANNEL, parent.ts)) == 3  # two turns and the end, once each
    assert all(m.thread_ts == parent.ts for m in thread if m.from_bot)
    assert [s.id for s in await sessions_of(store)] == [session_id]


async def test_a_direct_message_works_and_retry_runs_again(
    slack_settings, store, fake_slack, routed, git_repo
):
    fake = fake_slack
    await store.repos.route("slack", "*", "app")  # every place: DMs too
    async with serving(app_of(slack_settings, store)) as url:
        parent, envelope = fake.message("D0ALICE", "fix it please", files=("trace.txt",))
        answer = await send(url, fake, envelope)
        assert answer.json()["action"] == "queued", answer.text
        session_id = answer.json()["session_id"]
        session = await store.sessions.get(session_id)
        assert session.origin["direct"] is True
        assert "trace.txt" in session.prompt
        await wait_status(store, session_id, "blocked")
        await until(lambda: len(outcomes(fake, "D0ALICE", parent.ts)) == 1, seconds=10)

        # A retry is only for a session that ended; the button on another thread is refused.
        elsewhere, _ = fake.message(CHANNEL, "unrelated")
        status = status_message(fake, "D0ALICE", parent.ts, session_id)
        forged = Message(**{**status.__dict__, "channel": CHANNEL, "thread_ts": elsewhere.ts})
        refused = await click(url, fake, forged, CANCEL)
        assert refused.json()["action"] == "refused"
        assert (await store.sessions.get(session_id)).status.value == "blocked"
        await click(url, fake, status, CANCEL)
        await wait_status(store, session_id, "cancelled")
        await until(
            lambda: "[Retry]" in status_message(fake, "D0ALICE", parent.ts, session_id).shown,
            seconds=10,
        )
        status = status_message(fake, "D0ALICE", parent.ts, session_id)
        retried = await click(url, fake, status, RETRY)
        assert retried.json()["action"] == "retried"
        again = retried.json()["session_id"]
        assert again != session_id
        await wait_status(store, again, "blocked")
        await until(
            lambda: "*waiting for you*" in status_message(fake, "D0ALICE", parent.ts, again).shown,
            seconds=10,
        )


# --- what starts nothing -------------------------------------------------------------------------


async def test_chatter_bots_and_edits_start_nothing(slack_settings, store, fake_slack, routed):
    fake = fake_slack
    async with serving(app_of(slack_settings, store, workers=False)) as url:
        _, chatter = fake.message(CHANNEL, "lunch anyone?", mention=False)
        parent, mention = fake.message(CHANNEL, "fix the build")
        copy = fake.envelope(
            {**mention["event"], "type": "message", "channel_type": "channel"}
        )  # the message event Slack also sends about a mention
        bot = fake.envelope({**chatter["event"], "bot_id": "B0OTHER", "subtype": "bot_message"})
        edit = fake.envelope(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": CHANNEL,
                "ts": "1.2",
                "message": {"text": f"<@{BOT_USER}> fix"},
            }
        )
        own = fake.envelope({**chatter["event"], "user": BOT_USER})
        answers = [await send(url, fake, e) for e in (chatter, copy, bot, edit, own)]
    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json()["action"] for a in answers] == ["ignored"] * 5
    assert await sessions_of(store) == []
    assert fake.called("chat.postMessage") == []
    assert parent.ts  # the mention itself was never sent


@pytest.mark.parametrize("tamper", ["wrong-secret", "other-body", "stale", "missing"])
async def test_a_bad_signature_or_a_stale_timestamp_is_401(
    slack_settings, store, fake_slack, routed, tamper
):
    fake = fake_slack
    _, envelope = fake.message(CHANNEL, "fix the build")
    body = json.dumps(envelope).encode()
    headers = fake.signed(body)
    if tamper == "wrong-secret":
        headers = fake.signed(body, secret="not-the-secret")
    elif tamper == "other-body":
        body = body.replace(b"fix the build", b"drop the database")
    elif tamper == "stale":
        headers = fake.signed(body, timestamp=time.time() - 301)
    else:
        del headers["X-Slack-Signature"]
    async with (
        serving(app_of(slack_settings, store, workers=False)) as url,
        httpx.AsyncClient() as c,
    ):
        answer = await c.post(f"{url}/api/channels/slack/events", content=body, headers=headers)
        clicked = await c.post(
            f"{url}/api/channels/slack/actions",
            content=b"payload=%7B%7D",
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "unauthorized"
    assert clicked.status_code == 401
    assert SIGNING_SECRET not in answer.text
    assert await sessions_of(store) == []
    assert fake.calls == []


async def test_a_redelivery_makes_one_session(slack_settings, store, fake_slack, routed):
    fake = fake_slack
    async with serving(app_of(slack_settings, store, workers=False)) as url:
        _, envelope = fake.message(CHANNEL, "fix the build")
        first = await send(url, fake, envelope)
        again = await send(url, fake, envelope, retry=1)
        third = await send(url, fake, envelope, retry=2)
    assert first.json()["action"] == "queued"
    assert again.json()["action"] == third.json()["action"] == "duplicate"
    assert again.json()["session_id"] == first.json()["session_id"]
    assert len(await sessions_of(store)) == 1


async def test_a_repository_that_is_gone_is_said_in_the_thread(
    slack_settings, store, fake_slack, git_repo
):
    await store.repos.add("app", str(git_repo.path / "gone"), engine=None, priority=0)
    await store.repos.route("slack", CHANNEL, "app")
    async with serving(app_of(slack_settings, store, workers=False)) as url:
        parent, envelope = fake_slack.message(CHANNEL, "fix the build")
        first = await send(url, fake_slack, envelope)
        again = await send(url, fake_slack, envelope, retry=1)
        await until(lambda: len(fake_slack.bot_messages()) == 1, seconds=5)
    assert first.status_code == again.status_code == 200
    assert first.json()["action"] == "refused"
    assert "does not exist" in first.json()["reason"]
    (said,) = fake_slack.bot_messages()
    assert said.thread_ts == parent.ts
    assert said.text.startswith("I could not start on this: repository")
    assert await sessions_of(store) == []


async def test_a_template_by_name_is_the_task_and_a_bad_one_is_said_once(
    slack_settings, store, fake_slack, routed
):
    fake = fake_slack
    async with serving(app_of(slack_settings, store, workers=False)) as url:
        _, envelope = fake.message(
            CHANNEL, "app: template:dependency-upgrade package=lodash version=4.17.21"
        )
        queued = await send(url, fake, envelope)
        parent, envelope = fake.message(CHANNEL, "template:dependency-upgrade version=1")
        refused = await send(url, fake, envelope)
        again = await send(url, fake, envelope, retry=1)
        await until(lambda: any("could not start" in m.text for m in fake.bot_messages()))
    assert queued.json()["action"] == "queued"
    (session,) = await sessions_of(store)
    assert "Upgrade the dependency lodash to version 4.17.21" in session.prompt
    assert '<untrusted source="slack">' in session.prompt  # still fenced: the values are theirs
    assert refused.json()["action"] == "refused"
    assert again.json()["action"] == "duplicate"
    said = [m for m in fake.bot_messages() if m.thread_ts == parent.ts]
    assert len(said) == 1
    assert "package" in said[0].text


async def test_a_goal_is_planned_and_its_plan_said_in_the_thread(
    slack_settings, store, fake_slack, routed
):
    plan = {
        "tasks": [
            {"id": "api", "prompt": "add the endpoint", "repo": "app", "depends_on": []},
            {"id": "docs", "prompt": "document it", "repo": "app", "depends_on": ["api"]},
        ]
    }
    with FakeModelServer(default=[Reply(text=json.dumps(plan))]) as model:
        settings = slack_settings.model_copy(
            update={"planner_model": "planner", "planner_base_url": f"{model.url}/v1"}
        )
        async with serving(app_of(settings, store, workers=False)) as url:
            parent, envelope = fake_slack.message(
                CHANNEL, "goal: an /api/health endpoint, documented"
            )
            answer = await send(url, fake_slack, envelope)
            again = await send(url, fake_slack, envelope, retry=1)
            await until(lambda: any("Goal " in m.text for m in fake_slack.bot_messages()))
    assert answer.json()["action"] == "goal"
    assert again.json()["action"] == "duplicate"
    (goal,) = await store.goals.list()
    assert goal.status.value == "proposed"
    assert goal.text == "an /api/health endpoint, documented"
    assert goal.repo == "app"  # the channel's repository
    (said,) = [m for m in fake_slack.bot_messages() if m.thread_ts == parent.ts]
    assert f"telecoder goals approve {goal.id}" in said.text
    assert "- docs (app) after api: document it" in said.text
    assert await sessions_of(store) == []  # nothing runs before a person approves


async def test_url_verification_and_not_configured(settings, slack_settings, store, fake_slack):
    challenge = {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                 "type": "url_verification"}  # fmt: skip
    async with serving(app_of(slack_settings, store, workers=False)) as url:
        answer = await send(url, fake_slack, challenge)
        bad = await send(url, fake_slack, {"type": "url_verification"})
        async with httpx.AsyncClient() as c:
            spec = (await c.get(f"{url}/openapi.json")).json()
    for path in ("/api/channels/slack/events", "/api/channels/slack/actions"):
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) >= {"200", "401", "404", "422"}, path
        assert "SlackAnswer" in json.dumps(responses["200"])
    assert answer.status_code == 200
    assert answer.json()["challenge"] == challenge["challenge"]
    assert bad.status_code == 422
    async with serving(create_app(settings, store)) as url:
        missing = await send(url, fake_slack, challenge)
    assert missing.status_code == 404
    assert "TELECODER_SLACK_SIGNING_SECRET" in missing.json()["detail"]


# --- the status message survives a restart ---------------------------------------------------


async def test_a_restarted_server_edits_the_status_message_it_posted(fake_slack):
    fake = fake_slack
    parent, _ = fake.message(CHANNEL, "fix it")
    session = {
        "id": "s-restart",
        "status": "queued",
        "repo": "/srv/app",
        "origin": {"channel": "slack", "channel_id": CHANNEL, "thread_ts": parent.ts},
        "updated_at": "2026-11-28T12:00:00.000Z",
    }
    before = SlackChannel(bot_token=BOT_TOKEN, api_url=fake.api_url)
    await before.report(session)
    after = SlackChannel(bot_token=BOT_TOKEN, api_url=fake.api_url)  # nothing in memory
    running = {**session, "status": "running", "updated_at": "2026-11-28T12:00:01.000Z"}
    await after.report({**running, "activity": "edit README.md"})
    await after.report(session)  # late: changes nothing
    done = {
        **session,
        "status": "succeeded",
        "updated_at": "2026-11-28T12:00:02.000Z",
        "result": {"type": "branch", "text": "Done.", "pr_url": "https://example/pr/1"},
    }
    await after.report(done)
    await SlackChannel(bot_token=BOT_TOKEN, api_url=fake.api_url).report(done)  # redelivered
    (status,) = [m for m in fake.bot_messages() if m.metadata["event_type"] == STATUS_EVENT]
    assert "*queued*" in status.edits[0]
    assert "Now: edit README.md" in status.edits[1]
    assert "*succeeded*" in status.shown
    assert "https://example/pr/1" in status.shown
    assert len(status.edits) == 3  # queued → running → succeeded (twice: same text)
    (told,) = [m for m in fake.bot_messages() if m.metadata["event_type"] == OUTCOME_EVENT]
    assert told.thread_ts == parent.ts
    assert "https://example/pr/1" in told.text


async def test_slack_errors_are_clear_and_hold_no_token(fake_slack):
    channel = SlackChannel(bot_token="xoxb-wrong-token", api_url=fake_slack.api_url)
    with pytest.raises(
        SlackAPIError, match=r"Slack chat\.postMessage failed: invalid_auth"
    ) as caught:
        await channel.say({"channel_id": CHANNEL}, "hello")
    assert "xoxb" not in str(caught.value)
    good = SlackChannel(bot_token=BOT_TOKEN, api_url=fake_slack.api_url)
    assert await good.address("U0BOB") == {"channel": "slack", "channel_id": "D0BOB"}
    assert await good.address("#dev") == {"channel": "slack", "channel_id": "#dev"}
    await good.say(await good.address("@U0BOB"), "your session finished")
    (dm,) = fake_slack.bot_messages("D0BOB")
    assert dm.text == "your session finished"
    assert dm.thread_ts is None


async def test_a_rate_limit_is_waited_out_and_a_lasting_one_is_an_error(fake_slack):
    channel = SlackChannel(bot_token=BOT_TOKEN, api_url=fake_slack.api_url)
    fake_slack.limited["chat.postMessage"] = 2  # Slack answers 429, Retry-After: 1 — twice
    started = time.monotonic()
    await channel.say({"channel_id": CHANNEL}, "after the limit")
    assert time.monotonic() - started >= 2.0  # each Retry-After was honoured
    (said,) = fake_slack.bot_messages(CHANNEL)
    assert said.text == "after the limit"
    limited = [m for m, _ in fake_slack.calls if m == "chat.postMessage (rate limited)"]
    assert len(limited) == 2
    fake_slack.limited["chat.postMessage"] = 3  # more than RATE_LIMIT_TRIES
    fake_slack.retry_after = 0
    with pytest.raises(SlackAPIError, match=r"rate limited: retry after 0 s \(3 tries\)"):
        await channel.say({"channel_id": CHANNEL}, "never said")
    assert [m.text for m in fake_slack.bot_messages(CHANNEL)] == ["after the limit"]


def status_messages(fake: FakeSlack) -> list[Message]:
    return [m for m in fake.bot_messages() if (m.metadata or {}).get("event_type") == STATUS_EVENT]


# --- Socket Mode -----------------------------------------------------------------------------


async def test_socket_mode_receives_acks_and_reconnects(slack_settings, store, fake_slack, routed):
    fake = fake_slack
    settings = slack_settings.model_copy(
        update={"slack_app_token": SecretStr(APP_TOKEN), "slack_signing_secret": None}
    )
    async with serving(app_of(settings, store, workers=False)) as url:
        await until(lambda: len(fake.sockets) == 1, seconds=10)
        _, envelope = fake.message(CHANNEL, "fix the build")
        first = fake.push_event(envelope)
        await until(lambda: len(fake.acks) == 1, seconds=5)
        assert fake.acks == [first]
        await until(lambda: bool(fake.called("chat.postMessage")), seconds=10)
        fake.push_event(envelope, retry_attempt=1)  # redelivered: one session
        await until(lambda: len(fake.acks) == 2, seconds=5)
        (session,) = await sessions_of(store)
        status = status_message(fake, CHANNEL, envelope["event"]["ts"], session.id)
        fake.push_click(fake.click(status, CANCEL))  # a button, over the socket too
        await wait_status(store, session.id, "cancelled", seconds=10)
        await until(lambda: len(fake.acks) == 3, seconds=5)

        fake.disconnect()
        await until(lambda: len(fake.sockets) == 2, seconds=10)
        await until(lambda: fake.closed == 1, seconds=10)  # it let the old one go
        _, other = fake.message(CHANNEL, "and the docs", user="U0BOB")
        fake.push_event(other)
        await until(lambda: len(fake.acks) == 4, seconds=5)
        await until(lambda: len(status_messages(fake)) == 2, seconds=10)
        async with httpx.AsyncClient() as c:  # no signing secret: no HTTP events
            refused = await c.post(f"{url}/api/channels/slack/events", content=b"{}")
        assert refused.status_code == 404
    assert len(fake.called("apps.connections.open")) == 2
    assert len(await sessions_of(store)) == 2
