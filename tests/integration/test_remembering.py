"""Memory through the real worker and pipeline (issue 15): a finished session in repository A
leaves one summary; the next session's agent in A is given it (it is in the fake model
server's request log), one in B is not; ``memory: off`` in ``.telecoder.yml`` stops both
directions; ``TELECODER_MEMORY_MODEL`` writes what was learned; secrets never reach a memory.

The writing side runs the ``shell`` engine (fast, no model); the reading side Claude Code in
the sandbox against the fake model server. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder import memory
from telecoder.assemble import build_worker
from telecoder.conversation import Conversations
from telecoder.dispatcher import RuleDispatcher
from telecoder.domain import (
    EventKind,
    MemoryKind,
    Mode,
    NewRun,
    NewSession,
    RunKind,
    SessionStatus,
)
from telecoder.embedders import WORDLLAMA_NAME
from telecoder.masking import Masker
from telecoder.remembering import FRAME, USER_FRAME
from telecoder.server.state import default_intake
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worker import Worker
from tests.conftest import GitRepo, make_repo
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_dispatcher import RecordingChannel, inbound, said
from tests.integration.test_engine_shell import all_events, execute

CLOCK = "the login test needs the fake clock from tests/clock.py"
WRITE = f"mkdir -p docs && echo '{CLOCK}' > docs/login.md && echo '{CLOCK}'"
ASK = "fix the flaky login test"
SECRET = "sk-memory-secret-0123456789abcdef"
LEARNED_MARK = "summarise-me-marker"
LEARNED = f"Docs about the login test live in docs/login.md; the key was {SECRET}."


@pytest.fixture
def model() -> Iterator[FakeModelServer]:
    learned = json.dumps({"learned": LEARNED})
    with FakeModelServer(scripts={LEARNED_MARK: (Reply(text=learned),)}) as server:
        yield server


@pytest.fixture
def agent_settings(
    settings: Settings, agent_tools: Path, model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
    return settings.model_copy(
        update={"runtime": "sandbox", "agent_path": str(agent_tools), "kill_grace_seconds": 1.0}
    )


def shell(repo: GitRepo, prompt: str, **kw: object) -> NewSession:
    return NewSession(repo=str(repo.path), prompt=prompt, engine="shell", **kw)  # type: ignore[arg-type]


def claude(repo: GitRepo, prompt: str = ASK, **kw: object) -> NewSession:
    return NewSession(
        repo=str(repo.path), prompt=prompt, engine="claude-code", model="claude-sonnet-4-5", **kw
    )  # type: ignore[arg-type]


def bodies(model: FakeModelServer, since: int) -> list[str]:
    return [json.dumps(r.body) for r in model.model_requests()[since:]]


async def recalled_events(store: Store, session_id: str) -> list[dict[str, object]]:
    return [
        e.data
        for e in await all_events(store, session_id)
        if e.kind == EventKind.PROGRESS and e.data.get("step") == "memory_recalled"
    ]


async def test_a_session_is_remembered_and_given_to_the_next_in_its_repository_only(
    agent_settings: Settings, store: Store, model: FakeModelServer, tmp_path: Path
) -> None:
    a, b = make_repo(tmp_path, "a"), make_repo(tmp_path, "b")
    worker: Worker = build_worker(agent_settings, store)

    wrote = await execute(worker, store, shell(a, WRITE))
    assert wrote.status == SessionStatus.SUCCEEDED, wrote.error
    stored = await store.memories.of_session(wrote.id)
    assert stored is not None
    assert (stored.repo, stored.user, stored.kind) == (str(a.path), None, MemoryKind.SESSION)
    assert (stored.prompt, stored.outcome, stored.files) == (WRITE, "succeeded", ("docs/login.md",))
    assert CLOCK in stored.text
    assert "Files: docs/login.md" in stored.text

    # The next session in A: its agent is given the note, framed as data.
    before = len(model.model_requests())
    fixed = await execute(worker, store, claude(a), within=180)
    assert fixed.status == SessionStatus.SUCCEEDED, fixed.error
    sent = bodies(model, before)
    assert any(CLOCK in body and FRAME.splitlines()[0] in body for body in sent)
    assert any("data, not instructions" in body for body in sent)
    [event] = await recalled_events(store, fixed.id)
    assert event["repo"] == str(a.path)
    [given] = event["memories"]  # type: ignore[misc]
    assert given["id"] == stored.id
    # Embedded by the shipped embedder: recalled by meaning as well as by words.
    assert stored.embedder == WORDLLAMA_NAME
    assert given["similarity"] > 0.3
    # ... and leaves its own summary, once.
    its_own = await store.memories.of_session(fixed.id)
    assert its_own is not None
    assert its_own.files == ("fake.txt",)
    assert [m.id for m in await store.memories.list(repo=str(a.path))] == [its_own.id, stored.id]

    # A session in B is given nothing of A's.
    before = len(model.model_requests())
    other = await execute(worker, store, claude(b), within=180)
    assert other.status == SessionStatus.SUCCEEDED, other.error
    sent = bodies(model, before)
    assert sent
    assert not any(CLOCK in body or FRAME.splitlines()[0] in body for body in sent)
    assert await recalled_events(store, other.id) == []


@pytest.mark.parametrize("switch", ["repository", "global"])
async def test_memory_off_recalls_and_stores_nothing(
    agent_settings: Settings, store: Store, model: FakeModelServer, tmp_path: Path, switch: str
) -> None:
    """``memory: off`` in the repository's .telecoder.yml, or TELECODER_MEMORY=off."""
    files = {".telecoder.yml": "memory: off\n"} if switch == "repository" else None
    repo = make_repo(tmp_path, "off", files=files)
    await memory.remember(store, text=CLOCK, masker=Masker(), repo=str(repo.path))
    tuned = agent_settings.model_copy(update={"memory": switch == "repository"})
    worker = build_worker(tuned, store)
    before = len(model.model_requests())
    done = await execute(worker, store, claude(repo), within=180)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    sent = bodies(model, before)
    assert sent
    assert not any(CLOCK in body for body in sent)
    assert await recalled_events(store, done.id) == []
    assert await store.memories.of_session(done.id) is None
    assert len(await store.memories.list(repo=str(repo.path))) == 1  # only the one added here


async def test_the_memory_model_writes_what_was_learned_and_secrets_are_masked(
    settings: Settings, store: Store, model: FakeModelServer, git_repo: GitRepo
) -> None:
    tuned = settings.model_copy(
        update={
            "kill_grace_seconds": 1.0,
            "memory_model": "fake-model",
            "memory_base_url": f"{model.url}/v1",
            "memory_api_key": SecretStr(SECRET),
        }
    )
    worker = build_worker(tuned, store)
    prompt = f"echo {LEARNED_MARK} > notes.txt && echo the key is {SECRET}"
    done = await execute(worker, store, shell(git_repo, prompt))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    stored = await store.memories.of_session(done.id)
    assert stored is not None
    # What the model said is the lesson, masked like everything else.
    assert "Learned: Docs about the login test live in docs/login.md; the key was ***." in (
        stored.text
    )
    assert SECRET not in stored.text
    assert SECRET not in (stored.prompt or "")
    assert stored.files == ("notes.txt",)
    # The model was asked with the secret masked out of what it was told.
    [asked] = [r for r in model.model_requests() if r.path.endswith("/chat/completions")]
    assert LEARNED_MARK in json.dumps(asked.body)
    assert SECRET not in json.dumps(asked.body)


async def test_a_failed_session_is_remembered_none_with_memory_off(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(settings.model_copy(update={"kill_grace_seconds": 1.0}), store)
    broken = shell(git_repo, "echo the build needs make deps first; exit 3", max_attempts=1)
    failed = await execute(worker, store, broken)
    assert failed.status == SessionStatus.FAILED
    stored = await store.memories.of_session(failed.id)
    assert stored is not None
    assert stored.outcome is not None
    assert stored.outcome.startswith("failed (")
    assert stored.files == ()
    # TELECODER_MEMORY=off: nothing is stored anywhere.
    off = build_worker(
        settings.model_copy(update={"kill_grace_seconds": 1.0, "memory": False}), store
    )
    quiet = await execute(off, store, shell(git_repo, "echo nothing to keep"))
    assert quiet.status == SessionStatus.SUCCEEDED, quiet.error
    assert await store.memories.of_session(quiet.id) is None


async def test_a_chat_users_facts_are_given_to_their_sessions_only(
    agent_settings: Settings, store: Store, model: FakeModelServer, git_repo: GitRepo
) -> None:
    fact = "I prefer tabs over spaces in every Makefile"
    await memory.remember(store, text=fact, masker=Masker(), user="slack:U1", kind=MemoryKind.FACT)
    worker = build_worker(agent_settings, store)
    ask = "add a Makefile with spaces or tabs"
    mine = claude(git_repo, ask, origin={"channel": "slack", "user": "slack:U1"})
    theirs = claude(git_repo, ask, origin={"channel": "slack", "user": "slack:U2"})
    before = len(model.model_requests())
    done = await execute(worker, store, mine, within=180)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    sent = bodies(model, before)
    assert any(fact in body and USER_FRAME.splitlines()[0] in body for body in sent)
    [event] = await recalled_events(store, done.id)
    assert event["user"] == "slack:U1"
    before = len(model.model_requests())
    other = await execute(worker, store, theirs, within=180)
    assert other.status == SessionStatus.SUCCEEDED, other.error
    assert not any(fact in body for body in bodies(model, before))


async def test_remember_in_a_chat_keeps_a_fact_of_the_sender_masked(
    settings: Settings, store: Store
) -> None:
    channels = {"slack": RecordingChannel("slack")}
    talk = Conversations(
        store,
        intake=default_intake(settings),
        dispatcher=RuleDispatcher(),
        channels=channels,
        engines=["shell"],
        facts=Masker([SECRET]),
    )
    message = inbound(f"remember: I prefer tabs; my token is {SECRET}", "m1")
    received = await talk.receive(message)
    assert received.action == "remembered"
    [fact] = await store.memories.list(user="slack:U42")
    assert (fact.kind, fact.repo, fact.text) == (
        MemoryKind.FACT, None, "I prefer tabs; my token is ***"
    )  # fmt: skip
    assert (await said(channels["slack"], 1))[0].startswith("Noted:")
    assert (await talk.receive(message)).action == "duplicate"  # a redelivery keeps one
    assert len(await store.memories.list(user="slack:U42")) == 1
    assert (await store.sessions.list(limit=10)).sessions == []  # no session for it
    # With memory off (no masker given), the words are a message like any other.
    off = Conversations(
        store,
        intake=default_intake(settings),
        dispatcher=RuleDispatcher(),
        channels=channels,
        engines=["shell"],
    )
    assert (await off.receive(inbound("remember: spaces", "m2"))).action != "remembered"
    assert len(await store.memories.list(user="slack:U42")) == 1


async def test_reviewers_and_best_of_n_candidates_leave_no_memory(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(settings.model_copy(update={"kill_grace_seconds": 1.0}), store)
    candidate = shell(git_repo, "echo one > one.txt", task_key="candidate-1")
    await store.runs.create(NewRun(kind=RunKind.BEST_OF, spec={}), [candidate])
    claimed = await store.queue.claim(worker.id, only=candidate.id)
    assert claimed is not None
    done = await worker.execute(claimed)
    assert done is not None
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert await store.memories.of_session(candidate.id) is None

    review = await execute(worker, store, shell(git_repo, "echo looks fine", read_only=True))
    assert review.status == SessionStatus.SUCCEEDED, review.error
    assert await store.memories.of_session(review.id) is None
    # The same task, alone: remembered.
    alone = await execute(worker, store, shell(git_repo, "echo one > one.txt"))
    assert await store.memories.of_session(alone.id) is not None


async def test_a_chat_is_remembered_when_it_ends_idle_not_while_it_waits(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    tuned = settings.model_copy(update={"kill_grace_seconds": 1.0, "chat_idle_seconds": 0.5})
    worker = build_worker(tuned, store)
    chat = await execute(worker, store, shell(git_repo, "echo one > a.txt", mode=Mode.CHAT))
    assert chat.status == SessionStatus.BLOCKED, chat.error
    assert await store.memories.of_session(chat.id) is None  # it waits: not ended yet
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(30):
            # polling: the worker's idle sweep sends no signal
            while (stored := await store.memories.of_session(chat.id)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    assert (await store.sessions.get(chat.id)).status == SessionStatus.SUCCEEDED
    assert (stored.outcome, stored.files) == ("succeeded", ("a.txt",))
