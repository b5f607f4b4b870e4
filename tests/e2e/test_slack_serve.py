"""Slack through ``telecoder serve`` as a process, with a real agent CLI (Claude Code, in the
sandbox, through the gateway, against the fake model server): a mention in a channel with a
default repository → a chat session on it → its turn's answer and outcome in the thread; a reply
in the thread → the same agent session resumes (the model sees the reply) → a second answer."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx

from telecoder.channels.slack_blocks import OUTCOME_EVENT, STATUS_EVENT
from telecoder.store import open_store
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port, serve_process, wait, workers_alive
from tests.engine_cases import agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack

CHANNEL = "C0DEV"
SCRIPTS = {
    "second line": (
        Reply(text="Adding it.", command="echo second-line >> fake.txt"),
        Reply(text="Added the second line to fake.txt."),
    ),
}


def post(url: str, fake: FakeSlack, envelope) -> httpx.Response:
    body = json.dumps(envelope).encode()
    return httpx.post(f"{url}/api/channels/slack/events", content=body, headers=fake.signed(body))


def register(home: Path, repo: GitRepo) -> None:
    async def go() -> None:
        store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
        try:
            await store.repos.add("app", str(repo.path), engine=None, priority=0)
            await store.repos.route("slack", CHANNEL, "app")
        finally:
            await store.close()

    asyncio.run(go())


def told(fake: FakeSlack, ts: str, event: str) -> list:
    return [m for m in fake.thread(CHANNEL, ts) if (m.metadata or {}).get("event_type") == event]


def test_a_slack_thread_drives_a_real_agent_through_serve(
    home: Path, git_repo: GitRepo, agent_tools: Path, fake_slack: FakeSlack
):
    fake = fake_slack
    register(home, git_repo)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with FakeModelServer(scripts=SCRIPTS) as model:
        env = agent_env(home, model.url)
        keep = {k: v for k, v in env.items() if k.startswith(("ANTHROPIC_", "PATH"))}
        proc = serve_process(
            home,
            "127.0.0.1",
            port,
            **keep,
            TELECODER_AGENT_PATH=str(agent_tools),
            TELECODER_MODEL_RETRIES="1",
            TELECODER_ENGINE="claude-code",
            TELECODER_FORGE="local",
            TELECODER_NOTIFY_POLL_SECONDS="0.1",
            TELECODER_SLACK_BOT_TOKEN=BOT_TOKEN,
            TELECODER_SLACK_SIGNING_SECRET=SIGNING_SECRET,
            TELECODER_SLACK_API_URL=fake.api_url,
        )
        try:
            wait(lambda: workers_alive(url), 30, proc)
            parent, mention = fake.message(CHANNEL, "create fake.txt containing hello-from-fake")
            answer = post(url, fake, mention)
            assert answer.json()["action"] == "queued", answer.text
            session_id = answer.json()["session_id"]
            wait(lambda: len(told(fake, parent.ts, OUTCOME_EVENT)) == 1, 180, proc)
            (first,) = told(fake, parent.ts, OUTCOME_EVENT)
            assert "All done: created fake.txt." in first.shown

            _, reply = fake.message(
                CHANNEL, "now add a second line please", thread_ts=parent.ts, mention=False
            )
            answer = post(url, fake, reply)
            assert answer.json() == {"action": "continued", "session_id": session_id}
            wait(lambda: len(told(fake, parent.ts, OUTCOME_EVENT)) == 2, 180, proc)
            second = told(fake, parent.ts, OUTCOME_EVENT)[1]
            assert "Added the second line to fake.txt." in second.shown
            (status,) = told(fake, parent.ts, STATUS_EVENT)
            assert any("*started*" in text for text in status.edits)
            assert "*waiting for you*" in status.shown
            session = httpx.get(f"{url}/api/sessions/{session_id}").json()
            assert (session["status"], session["attempt"]) == ("blocked", 2)
            assert session["engine"] == "claude-code"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=40)
            finally:
                if proc.poll() is None:
                    proc.kill()
        asked = [json.dumps(r.body) for r in model.model_requests()]
    assert any("now add a second line please" in body for body in asked)
    branch = session["branch"]
    assert git_repo.remote_git("show", f"{branch}:fake.txt").splitlines() == [
        "hello-from-fake",
        "second-line",
    ]
