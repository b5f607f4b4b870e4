"""Telegram end to end through ``telecoder serve`` as a process: it long-polls the fake Bot API,
a DM becomes a chat session on the chat's repository that a real agent CLI (Claude Code, in
the sandbox, against the fake model server) works on; the progress message is edited to the
outcome, the turn's end is a reply; a reply to it is the next turn of the same session, whose
agent sees the message; SIGTERM stops the long poll at once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

from tests.cli import TELECODER
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port, wait
from tests.engine_cases import PROMPT, WRITTEN, agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram import TOKEN, FakeTelegram, User

ALICE = User(111, "alice", "Alice")
SCRIPTS = {
    "also-note-the-date": (
        Reply(text="Adding a note.", command=f"echo noted >> {WRITTEN}"),
        Reply(text="Noted it in the file."),
    ),
}


async def register(home: Path, repo: GitRepo) -> None:
    from telecoder.store import open_store

    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    try:
        await store.repos.add("app", str(repo.path), engine=None, priority=0)
        await store.repos.route("telegram", str(ALICE.id), "app")
    finally:
        await store.close()


def turns(fake: FakeTelegram) -> int:
    return sum("Your turn" in m.text for m in fake.bot_messages(ALICE.id))


def test_a_telegram_conversation_through_telecoder_serve(
    home: Path, git_repo: GitRepo, agent_tools: Path, fake_telegram: FakeTelegram
):
    fake = fake_telegram
    asyncio.run(register(home, git_repo))
    with FakeModelServer(scripts=SCRIPTS) as model:
        env = agent_env(
            home,
            model.url,
            TELECODER_ENGINE="claude-code",
            TELECODER_POLL_SECONDS="0.1",
            TELECODER_HEARTBEAT_SECONDS="0.3",
            TELECODER_NOTIFY_POLL_SECONDS="0.1",
            TELECODER_TELEGRAM_BOT_TOKEN=TOKEN,
            TELECODER_TELEGRAM_API_URL=fake.url,
            TELECODER_TELEGRAM_ALLOWED_USERS=str(ALICE.id),
            GIT_CONFIG_GLOBAL="/dev/null",
            GIT_CONFIG_NOSYSTEM="1",
        )
        proc = subprocess.Popen(
            [TELECODER, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait(lambda: bool(fake.called("getUpdates")), 60, proc)
            asked = fake.dm(ALICE, PROMPT)
            wait(lambda: turns(fake) == 1, 240, proc)
            progress, final = fake.bot_messages(ALICE.id)
            assert progress.reply_to is not None
            assert progress.reply_to.message_id == asked.message_id
            assert progress.edits >= 1
            assert "— blocked" in progress.text
            assert "Changed: 1 file(s)" in progress.text

            fake.dm(ALICE, "also-note-the-date in it", reply_to=final)
            wait(lambda: turns(fake) == 2, 240, proc)
            bot = fake.bot_messages(ALICE.id)
            assert len(bot) == 3  # one progress message, a reply per turn
            assert bot[0].message_id == progress.message_id
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=60)
            assert time.monotonic() - started < 30, output
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    # The agent was asked the follow-up (fenced as untrusted text) in its next request.
    asked_texts = [json.dumps(r.body) for r in model.model_requests()]
    assert any("also-note-the-date in it" in text for text in asked_texts)
    assert TOKEN not in output
