"""Chat sessions: a turn, then `blocked` with the worktree and the agent's session kept;
`telecoder send` resumes it in the same worktree; idle chats end; ended chats leave nothing.

The shell engine (a turn is a command) proves the states, events and git through the CLI; one
real agent (Claude Code against the fake model server) proves the conversation is resumed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder import chat
from telecoder.assemble import build_worker
from telecoder.domain import EventKind, Mode, NewSession, SessionStatus
from telecoder.errors import BadInput, Conflict, SessionNotFound
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from tests.cli import TELECODER, cli_env, events_json, session_json, telecoder, wait_for
from tests.conftest import GitRepo, make_repo
from tests.engine_cases import E2E_BY_ID, PROMPT, agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_engine_shell import all_events, tuned


def chat_run(repo: GitRepo, prompt: str, env: dict[str, str], *more: str) -> dict[str, Any]:
    done = telecoder(
        "run", prompt, "--repo", str(repo.path), "--mode", "chat", "--json", *more,
        env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session: dict[str, Any] = json.loads(done.stdout)
    return session


def send(session_id: str, text: str, env: dict[str, str]) -> dict[str, Any]:
    done = telecoder("send", session_id, text, "--json", env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    session: dict[str, Any] = json.loads(done.stdout)
    return session


async def attempts_of(home: Path, session_id: str) -> list[Any]:
    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    try:
        return await store.sessions.attempts(session_id)
    finally:
        await store.close()


async def test_a_chat_continues_in_its_worktree_turn_after_turn(
    git_repo: GitRepo, home: Path
) -> None:
    env = cli_env(home)
    first = chat_run(git_repo, "echo one > a.txt && echo wrote a", env, "--engine", "shell")
    session_id, branch = first["id"], first["branch"]
    assert first["status"] == "blocked"
    assert first["mode"] == "chat"
    assert first["finished_at"] is None
    assert first["result"]["type"] == "branch"
    assert first["result"]["text"] == "wrote a"
    assert git_repo.remote_git("show", f"{branch}:a.txt") == "one"
    worktree = home / "worktrees" / f"{session_id}-1"
    assert worktree.is_dir()
    assert (home / "engines" / session_id).is_dir()

    second = send(session_id, "echo two > b.txt", env)
    assert (second["status"], second["attempt"]) == ("blocked", 2)
    assert git_repo.remote_git("show", f"{branch}:a.txt") == "one"  # the first turn's work
    assert git_repo.remote_git("show", f"{branch}:b.txt") == "two"
    assert git_repo.remote_git("log", "--format=%s", f"main..{branch}").splitlines() == [
        "echo two > b.txt",
        "echo one > a.txt && echo wrote a",
    ]

    third = send(session_id, "cat a.txt b.txt", env)  # a question: no change, same branch
    assert third["status"] == "blocked"
    assert third["result"]["type"] == "branch"
    assert third["result"]["commit"] == second["result"]["commit"]
    assert third["result"]["text"] == "one\ntwo"
    assert git_repo.remote_git("rev-list", "--count", f"main..{branch}") == "2"

    attempts = await attempts_of(home, session_id)
    assert [a.workspace_path for a in attempts] == [str(worktree)] * 3
    events = events_json(session_id, env)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    said = [e["data"]["text"] for e in events if e["data"].get("role") == "user"]
    assert said == ["echo two > b.txt", "cat a.txt b.txt"]
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses == ["queued", "running", "blocked"] + ["queued", "running", "blocked"] * 2
    # Each message comes right before the turn that answers it.
    kinds = [(e["kind"], e["data"].get("status")) for e in events]
    sent = kinds.index(("message", None))
    assert kinds[sent + 1 : sent + 3] == [("status", "queued"), ("status", "running")]

    # A turn that fails ends the chat, and what it kept is removed.
    failed = telecoder("send", session_id, "echo broken >&2; exit 3", "--json", env=env)
    assert failed.returncode == 1
    ended = json.loads(failed.stdout)
    assert (ended["status"], ended["failure_kind"]) == ("failed", "engine_error")
    assert not worktree.exists()
    assert not (home / "engines" / session_id).exists()
    refused = telecoder("send", session_id, "echo again", env=env)
    assert refused.returncode == 4
    assert "the chat ended" in refused.stderr


def test_send_refuses_what_is_not_a_waiting_chat(git_repo: GitRepo, home: Path) -> None:
    env = cli_env(home)
    task = json.loads(
        telecoder("run", "true", "--repo", str(git_repo.path), "--json", env=env).stdout
    )
    done = telecoder("send", task["id"], "more", env=env)
    assert done.returncode == 4
    assert "is a task, not a chat" in done.stderr
    assert telecoder("send", "nosuchsession", "more", env=env).returncode == 3
    waiting = chat_run(git_repo, "true", env)
    empty = telecoder("send", waiting["id"], "   ", env=env)
    assert empty.returncode == 2
    assert "the message is empty" in empty.stderr
    assert session_json(waiting["id"], env)["status"] == "blocked"
    detached = telecoder("send", waiting["id"], "echo later", "--detach", env=env)
    assert detached.returncode == 0, detached.stderr
    assert detached.stdout.strip() == waiting["id"]
    assert session_json(waiting["id"], env)["status"] == "queued"


@pytest.fixture
def worker_procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_idle_chats_end_and_ended_chats_leave_nothing(
    git_repo: GitRepo, home: Path, worker_procs: list[subprocess.Popen[str]]
) -> None:
    env = cli_env(home, TELECODER_POLL_SECONDS="0.1", TELECODER_HEARTBEAT_SECONDS="0.3")
    idle = chat_run(git_repo, "echo one > a.txt", env)
    cancelled = chat_run(git_repo, "echo two > b.txt", env)
    gone = telecoder("cancel", cancelled["id"], env=env)
    assert gone.returncode == 0, gone.stderr
    for session in (idle, cancelled):
        assert (home / "worktrees" / f"{session['id']}-1").is_dir()

    worker = subprocess.Popen(
        [TELECODER, "worker"],
        env={**env, "TELECODER_CHAT_IDLE_SECONDS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    worker_procs.append(worker)
    final = wait_for(
        lambda: (s := session_json(idle["id"], env))["status"] == "succeeded" and s,
        timeout=20,
        what="the idle chat to end",
    )
    assert final["result"] == idle["result"]  # its last result stays
    assert final["finished_at"] is not None
    last = events_json(idle["id"], env)[-1]["data"]
    assert last == {"status": "succeeded", "reason": "no message for 1 s: the chat ended"}
    for session in (idle, cancelled):
        wait_for(
            lambda s=session: (
                not (home / "worktrees" / f"{s['id']}-1").exists()
                and not (home / "engines" / s["id"]).exists()
            ),
            timeout=10,
            what=f"the worktree of {session['id']} to be removed",
        )
    assert git_repo.remote_git("show", f"{idle['branch']}:a.txt") == "one"
    assert session_json(cancelled["id"], env)["status"] == "cancelled"


async def test_messages_wait_for_a_running_turn_and_join_the_first(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    new = NewSession(
        repo=str(git_repo.path), prompt="echo one > a.txt", engine="shell", mode=Mode.CHAT
    )
    await store.sessions.create(new)
    # Queued and not started yet: the first turn gets the message too.
    queued = await chat.send(store, new.id, "echo extra > e.txt", sender="alice")
    assert queued.session.status == SessionStatus.QUEUED
    assert queued.seq == 2  # right after "queued": no new status, it was queued already
    worker = build_worker(tuned(settings), store)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    with pytest.raises(Conflict, match="in the middle of a turn"):
        await chat.send(store, new.id, "not now")
    done = await worker.execute(claimed)
    assert done is not None
    assert done.status == SessionStatus.BLOCKED, done.error
    branch = new.branch
    assert git_repo.remote_git("show", f"{branch}:a.txt") == "one"
    assert git_repo.remote_git("show", f"{branch}:e.txt") == "extra"
    events = await all_events(store, new.id)
    assert [e.data for e in events if e.data.get("role") == "user"] == [
        {"role": "user", "text": "echo extra > e.txt", "from": "alice"}
    ]
    assert not any(e.data.get("text") == "not now" for e in events if e.kind == EventKind.MESSAGE)
    with pytest.raises(BadInput, match="the message is empty"):
        await chat.send(store, new.id, " \n")
    with pytest.raises(SessionNotFound):
        await chat.send(store, "nosuchsession", "hi")
    await store.sessions.cancel(new.id)
    with pytest.raises(Conflict, match="the chat ended"):
        await chat.send(store, new.id, "hi")
    assert await worker.pipeline.sweep() == [new.id]
    assert not (settings.worktrees / f"{new.id}-1").exists()
    assert not (settings.engine_homes / new.id).exists()


SECOND = "second.txt"
FOLLOW_UP = f"now also create {SECOND}"
FOLLOW_UP_SCRIPT = (
    Reply(text="Adding it.", command=f"echo two > {SECOND}"),
    Reply(text=f"Added {SECOND}."),
)


@pytest.mark.usefixtures("agent_tools")
async def test_a_real_agent_resumes_its_conversation(git_repo: GitRepo, tmp_path: Path) -> None:
    case = E2E_BY_ID["claude-code"]
    home = tmp_path / "agent-home"
    with FakeModelServer(scripts={FOLLOW_UP: FOLLOW_UP_SCRIPT}) as server:
        env = agent_env(home, server.url)
        first = chat_run(git_repo, PROMPT, env, "--engine", case.engine, "--model", case.model)
        assert first["status"] == "blocked", first["error"]
        asked = len(server.model_requests())
        second = send(first["id"], FOLLOW_UP, env)
        later = [json.dumps(r.body) for r in server.model_requests()[asked:]]
    assert second["status"] == "blocked", second["error"]
    assert second["result"]["text"] == f"Added {SECOND}."
    branch = first["branch"]
    assert git_repo.remote_git("diff", "--name-only", "main", branch).splitlines() == [
        "fake.txt",
        SECOND,
    ]
    # The follow-up went to the same conversation: the model saw the first prompt again.
    assert any(PROMPT in body for body in later if FOLLOW_UP in body)
    first_id, second_id = [a.engine_session_id for a in await attempts_of(home, first["id"])]
    assert first_id
    assert second_id == first_id
    assert second["cost_usd"] > first["cost_usd"] > 0


def test_setup_runs_once_for_a_chat_not_on_every_turn(tmp_path: Path, home: Path) -> None:
    repo = make_repo(
        tmp_path,
        files={
            "README.md": "hello\n",
            ".gitignore": "deps/\n",
            ".telecoder.yml": "setup: ['mkdir -p deps && echo x >> deps/runs']\n",
        },
    )
    env = cli_env(home)
    first = chat_run(repo, "wc -l < deps/runs", env, "--engine", "shell")
    assert (first["status"], first["result"]["text"]) == ("blocked", "1")
    second = send(first["id"], "wc -l < deps/runs", env)
    assert (second["status"], second["result"]["text"]) == ("blocked", "1")
    setups = [e for e in events_json(first["id"], env) if e["kind"] == "setup"]
    assert [e["data"]["ok"] for e in setups] == [True, True]  # the command, nothing to commit
