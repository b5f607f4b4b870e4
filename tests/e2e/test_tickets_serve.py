"""Linear and Jira through ``telecoder serve`` as a process, with a real agent CLI (Claude Code,
in the sandbox, through the gateway, against the fake model server): an issue moved to
"Ready for Dev" in each → a session on the team's / project's default repository → a status
comment on the ticket with the session's link, edited to the outcome and the branch."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx

from telecoder.store import open_store
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port, serve_process, wait, workers_alive
from tests.engine_cases import agent_env
from tests.fakes import jira, linear
from tests.fakes.jira import fake_jira_fixture  # noqa: F401
from tests.fakes.linear import fake_linear_fixture  # noqa: F401
from tests.fakes.model_server import FakeModelServer

PUBLIC = "https://telecoder.example"


def register(home: Path, repo: GitRepo) -> None:
    async def go() -> None:
        store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
        try:
            await store.repos.add("app", str(repo.path), engine=None, priority=0)
            await store.repos.route("linear", "ENG", "app")
            await store.repos.route("jira", "PROJ", "app")
        finally:
            await store.close()

    asyncio.run(go())


def test_linear_and_jira_tickets_drive_a_real_agent_through_serve(
    home: Path,
    git_repo: GitRepo,
    agent_tools: Path,
    fake_linear: linear.FakeLinear,
    fake_jira: jira.FakeJira,
):
    register(home, git_repo)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    task = "Please create fake.txt containing hello-from-fake"
    with FakeModelServer() as model:
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
            TELECODER_PUBLIC_URL=PUBLIC,
            TELECODER_LINEAR_WEBHOOK_SECRET=linear.WEBHOOK_SECRET,
            TELECODER_LINEAR_API_KEY=linear.API_KEY,
            TELECODER_LINEAR_API_URL=fake_linear.api_url,
            TELECODER_JIRA_WEBHOOK_SECRET=jira.WEBHOOK_SECRET,
            TELECODER_JIRA_URL=fake_jira.url,
            TELECODER_JIRA_EMAIL=jira.EMAIL,
            TELECODER_JIRA_API_TOKEN=jira.API_TOKEN,
        )
        try:
            wait(lambda: workers_alive(url), 30, proc)
            ticket = fake_linear.add_issue("Add the fake file", task, team="ENG", state="Todo")
            body, headers = fake_linear.signed(fake_linear.update(ticket, state="Ready for Dev"))
            answer = httpx.post(f"{url}/api/channels/linear/webhook", content=body, headers=headers)
            assert answer.json()["action"] == "queued", answer.text
            on_linear = answer.json()["session_id"]

            issue = fake_jira.add_issue("Add the fake file", task, project="PROJ")
            body, headers = fake_jira.signed(fake_jira.update(issue, status="Ready for Dev"))
            answer = httpx.post(f"{url}/api/channels/jira/webhook", content=body, headers=headers)
            assert answer.json()["action"] == "queued", answer.text
            on_jira = answer.json()["session_id"]
            assert on_jira != on_linear

            def ended(comments: list[str]) -> bool:
                return any("Changed" in text for text in comments)

            wait(lambda: ended([c.body for c in fake_linear.comments_on(ticket)]), 240, proc)
            wait(lambda: ended([c.text for c in fake_jira.comments_on(issue)]), 240, proc)
            (linear_comment,) = fake_linear.comments_on(ticket)  # one status comment, edited
            (jira_comment,) = fake_jira.comments_on(issue)
            assert f"{PUBLIC}/sessions/{on_linear}" in linear_comment.body
            assert on_jira in jira_comment.text
            sessions = {
                s: httpx.get(f"{url}/api/sessions/{s}").json() for s in (on_linear, on_jira)
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=40)
            finally:
                if proc.poll() is None:
                    proc.kill()
        asked = [json.dumps(r.body) for r in model.model_requests()]
    assert any("hello-from-fake" in body for body in asked)
    for session in sessions.values():
        assert session["status"] == "blocked"  # a chat, waiting for the next comment
        assert session["engine"] == "claude-code"
        assert session["origin"]["url"]
        content = git_repo.remote_git("show", f"{session['branch']}:fake.txt")
        assert content.strip() == "hello-from-fake"
    assert sessions[on_linear]["thread"] == f"linear:{ticket.id}"
    assert sessions[on_jira]["thread"] == f"jira:{issue.key}"
