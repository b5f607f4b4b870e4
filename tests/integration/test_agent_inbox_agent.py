"""Issue 14's acceptance: an agent inside the sandbox asks its leader a question through the
inbox, and the answer resumes it.

Claude Code in the bubblewrap sandbox, against the fake model server, through the real worker,
pipeline and gateway: the session is a task of an ``orch`` run whose leader is ``lead``. Its
first turn runs ``telecoder-inbox ask "Which database?"`` and ends → the session is ``blocked``
with that question, and the inbox holds it (from ``session:<id>``, in ``orch:<run>:t1``, to
``lead``) → ``chat.answer`` (what ``telecoder answer`` and ``orch answer`` call) → the *same*
agent session resumes (the model sees the answer), finishes, and the answer is the question's
``answer`` reply in the inbox.

``blocked_agent`` yields the blocked session (with its worker and model server), for more
ways to answer it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from telecoder import chat
from telecoder.assemble import build_worker
from telecoder.domain import EventKind, MessageKind, NewRun, NewSession, RunKind, Session
from telecoder.domain import SessionStatus as S
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worker import Worker
from tests.conftest import GitRepo
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_engine_shell import all_events

PROMPT = "record which database the service uses in db.txt"
QUESTION = "Which database?"
ANSWER = "Use PostgreSQL, please."
SCRIPTS = {
    PROMPT: (
        Reply(text="I need to ask first.", command=f'telecoder-inbox ask "{QUESTION}"'),
        Reply(text="I asked my leader which database to use; I will go on with the answer."),
    ),
    ANSWER: (
        Reply(text="Writing it down.", command="echo postgresql > db.txt"),
        Reply(text="Recorded PostgreSQL in db.txt."),
    ),
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agent-inbox.db'}"


@dataclass
class Blocked:
    store: Store
    worker: Worker
    model: FakeModelServer
    session: Session  # blocked with the agent's question
    leader: str = "lead"

    async def run_turn(self, within: float = 180) -> Session:
        """Claim the session again and run its next turn here."""
        claimed = await self.store.queue.claim(self.worker.id, only=self.session.id)
        assert claimed is not None
        async with asyncio.timeout(within):
            done = await self.worker.execute(claimed)
        assert done is not None
        return done


@pytest.fixture
def model() -> Iterator[FakeModelServer]:
    with FakeModelServer(scripts=SCRIPTS) as server:
        yield server


@pytest.fixture
async def blocked_agent(
    settings: Settings,
    store: Store,
    git_repo: GitRepo,
    agent_tools: Path,
    model: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Blocked:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
    tuned = settings.model_copy(
        update={"runtime": "sandbox", "agent_path": str(agent_tools), "kill_grace_seconds": 1.0}
    )
    worker = build_worker(tuned, store)
    task = NewSession(
        repo=str(git_repo.path),
        prompt=PROMPT,
        engine="claude-code",
        model="claude-sonnet-4-5",
        task_key="t1",
    )
    await store.runs.create(NewRun(kind=RunKind.ORCH, spec={"leader": "lead"}), [task])
    blocked = Blocked(store, worker, model, await store.sessions.get(task.id))
    blocked.session = await blocked.run_turn()
    return blocked


async def test_an_agent_asks_its_leader_and_the_answer_resumes_it(
    blocked_agent: Blocked, git_repo: GitRepo
) -> None:
    store, asked, model = blocked_agent.store, blocked_agent.session, blocked_agent.model
    assert asked.status == S.BLOCKED, asked.error
    assert asked.question == QUESTION
    # The question is in the inbox: from the session's agent, in its task's thread, to the leader.
    thread = f"orch:{asked.run_id}:t1"
    [question] = await store.inbox.list(thread=thread)
    assert (question.kind, question.sender, question.recipient, question.body) == (
        MessageKind.QUESTION, f"session:{asked.id}", "lead", QUESTION
    )  # fmt: skip
    assert [m.id for m in await store.inbox.fetch("lead")] == [question.id]
    # The agent was told about its tool; the session's events say what it did.
    first = [json.dumps(r.body) for r in model.model_requests()]
    assert any("telecoder-inbox ask" in body and "your leader (lead)" in body for body in first)
    said = [
        e.data["message"]
        for e in await all_events(store, asked.id)
        if e.kind == EventKind.PROGRESS and e.data.get("step") == "asked"
    ]
    assert said == [f"asked the leader: {QUESTION}"]
    before = len(model.model_requests())

    sent = await chat.answer(store, asked.id, ANSWER, sender=blocked_agent.leader)
    assert sent.session.status == S.QUEUED
    done = await blocked_agent.run_turn()

    assert done.status == S.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.text == "Recorded PostgreSQL in db.txt."
    assert git_repo.remote_git("show", f"{done.branch}:db.txt") == "postgresql"
    # The same agent conversation went on with the answer.
    later = [json.dumps(r.body) for r in model.model_requests()[before:]]
    assert any(ANSWER in body and QUESTION in body and PROMPT in body for body in later)
    first_attempt, second_attempt = await store.sessions.attempts(asked.id)
    assert second_attempt.engine_session_id == first_attempt.engine_session_id
    # The answer is the question's answer in the inbox, from the leader, to the agent.
    [answer] = [m for m in await store.inbox.list(thread=thread) if m.reply_to == question.id]
    assert (answer.kind, answer.sender, answer.recipient, answer.body) == (
        MessageKind.ANSWER, "lead", f"session:{asked.id}", ANSWER
    )  # fmt: skip
