"""A real agent asks for help and is resumed with the answer (issue 12's acceptance).

Claude Code against the fake model server, through the ``telecoder`` CLI: its first reply asks
a question (``QUESTION: …``) → the task waits ``blocked`` with it → ``telecoder answer`` →
the *same* agent session resumes in the same worktree (the model's next request holds the
answer and the first prompt) → it finishes with a pushed branch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telecoder import questions
from tests.cli import telecoder
from tests.conftest import GitRepo
from tests.engine_cases import E2E_BY_ID, PROMPT, agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.slack import fake_slack
from tests.integration import test_slack as slack
from tests.integration.test_chat import attempts_of
from tests.server import serving, until

# The Slack tests' fixtures, shared.
slack_settings = slack.slack_settings
routed = slack.routed
fix_engine = slack.fix_engine
_FIXTURES = (fake_slack,)

QUESTION = "Which name should the new file have?"
ANSWER = "call it answered.txt"
SCRIPTS = {
    PROMPT: (Reply(text=f"I can create it, but one thing first.\n\nQUESTION: {QUESTION}"),),
    ANSWER: (
        Reply(text="Creating it.", command="echo hello-from-fake > answered.txt"),
        Reply(text="Created answered.txt."),
    ),
}


@pytest.mark.usefixtures("agent_tools")
async def test_a_real_agent_asks_and_the_answer_resumes_it(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    case = E2E_BY_ID["claude-code"]
    home = tmp_path / "agent-home"
    with FakeModelServer(scripts=SCRIPTS) as server:
        env = agent_env(home, server.url)
        ran = telecoder(
            "run", PROMPT, "--repo", str(git_repo.path), "--engine", case.engine,
            "--model", case.model, "--json", env=env, timeout=240,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        asked = json.loads(ran.stdout)
        assert asked["status"] == "blocked", asked["error"]
        assert asked["question"] == QUESTION
        assert asked["mode"] == "task"
        shown = telecoder("show", asked["id"], env=env)
        assert QUESTION in shown.stdout
        assert f"telecoder answer {asked['id']}" in shown.stdout
        listed = telecoder("list", env=env)
        assert f"asks: {QUESTION}"[:40] in listed.stdout
        before = len(server.model_requests())

        answered = telecoder("answer", asked["id"], ANSWER, "--json", env=env, timeout=240)
        later = [json.dumps(r.body) for r in server.model_requests()[before:]]
    assert answered.returncode == 0, answered.stderr
    done = json.loads(answered.stdout)
    assert done["status"] == "succeeded", done["error"]
    assert done["question"] is None
    assert done["result"]["type"] == "branch"
    assert done["result"]["text"] == "Created answered.txt."
    assert git_repo.remote_git("show", f"{done['branch']}:answered.txt") == "hello-from-fake"
    # The answer reached the model, in the same conversation as the first prompt and question.
    assert later
    assert any(ANSWER in body and PROMPT in body and QUESTION in body for body in later)
    first, second = await attempts_of(home, asked["id"])
    assert first.engine_session_id
    assert second.engine_session_id == first.engine_session_id
    assert second.workspace_path == first.workspace_path
    # Answered once: a second answer is refused (it no longer waits).
    refused = telecoder("answer", asked["id"], "again", env=env)
    assert refused.returncode == 4
    assert "not waiting for an answer" in refused.stderr


THREAD_QUESTION = "Which name should the greeting file have?"
THREAD_ANSWER = "name it from-the-thread.txt"
THREAD_SCRIPTS = {
    "write a greeting file": (Reply(text=f"Before I start:\n\nQUESTION: {THREAD_QUESTION}"),),
    THREAD_ANSWER: (
        Reply(text="Writing it.", command="echo hello > from-the-thread.txt"),
        Reply(text="Wrote from-the-thread.txt."),
    ),
}


async def test_asked_in_a_slack_thread_answered_there(
    slack_settings, store, fake_slack, routed, git_repo, agent_tools, monkeypatch
):
    """Issue 12's acceptance: blocked → answered in the thread → the agent resumes (the fake
    model server sees the answer in its next request) → finished with a reply."""
    with FakeModelServer(scripts=THREAD_SCRIPTS) as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        settings = slack_settings.model_copy(
            update={"engine": "claude-code", "agent_path": str(agent_tools)}
        )
        async with serving(slack.app_of(settings, store)) as url:
            parent, mention = fake_slack.message(slack.CHANNEL, "write a greeting file please")
            queued = (await slack.send(url, fake_slack, mention)).json()
            assert queued["action"] == "queued", queued
            session_id = queued["session_id"]
            asked = await slack.wait_status(store, session_id, "blocked", seconds=120)
            assert asked.question == THREAD_QUESTION
            await until(lambda: _shown(fake_slack, parent))  # the thread shows the question
            first = [json.dumps(r.body) for r in model.model_requests()]
            assert any(questions.HINT[:40] in body for body in first)  # told how to ask
            before = len(first)

            _, reply = fake_slack.message(
                slack.CHANNEL, THREAD_ANSWER, thread_ts=parent.ts, mention=False
            )
            continued = (await slack.send(url, fake_slack, reply)).json()
            assert continued == {"action": "continued", "session_id": session_id}
            await until(
                lambda: len(slack.outcomes(fake_slack, slack.CHANNEL, parent.ts)) == 2, seconds=120
            )
            later = [json.dumps(r.body) for r in model.model_requests()[before:]]
            done = await store.sessions.get(session_id)
    assert done.status.value == "blocked", done.error  # a chat: its turn is over, it waits
    assert done.question is None
    assert done.result is not None
    assert done.result.text == "Wrote from-the-thread.txt."
    assert git_repo.remote_git("show", f"{done.branch}:from-the-thread.txt") == "hello"
    assert any(THREAD_ANSWER in body and THREAD_QUESTION in body for body in later)
    (_, said) = slack.outcomes(fake_slack, slack.CHANNEL, parent.ts)
    assert "Wrote from-the-thread.txt." in said.shown


def _shown(fake, parent) -> bool:
    return any(THREAD_QUESTION in m.shown for m in fake.thread(slack.CHANNEL, parent.ts))
