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

from tests.cli import telecoder
from tests.conftest import GitRepo
from tests.engine_cases import E2E_BY_ID, PROMPT, agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_chat import attempts_of

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
