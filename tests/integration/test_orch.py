"""One orch run, end to end: tasks with a dependency, dispatch into a real worktree, a real
worker (the shell engine, in the sandbox), reconcile, the dependant ready and dispatched; a
dirty checkout refused in a strict run; a question asked (in the session, and in the inbox)
and answered by the leader. Real store (SQLite and PostgreSQL), real git, real processes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from telecoder import orch, registry
from telecoder.assemble import build_forges, build_worker, build_workspace
from telecoder.domain import (
    MessageKind,
    MessageStatus,
    RunStatus,
    Session,
    SessionStatus,
    TaskStatus,
)
from telecoder.errors import BadInput, Conflict, SessionNotFound, TimedOut
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worker import Worker
from tests.conftest import GitRepo, git
from tests.integration.test_engine_shell import tuned


def context(settings: Settings, store: Store) -> orch.Context:
    return orch.Context(
        store=store,
        settings=settings,
        workspace=build_workspace(settings),
        engines=registry.names("engines"),
        forges=build_forges(settings),
        instructed=lambda engine: engine != "shell",
    )


async def run_session(worker: Worker, store: Store, session_id: str) -> Session:
    claimed = await store.queue.claim(worker.id, only=session_id)
    assert claimed is not None
    async with asyncio.timeout(60):
        done = await worker.execute(claimed)
    assert done is not None
    return done


def branch_of(worktree: str) -> str:
    return git("-c", "safe.directory=*", "-C", worktree, "branch", "--show-current")


async def test_one_orch_run(settings: Settings, store: Store, git_repo: GitRepo) -> None:
    settings = tuned(settings)
    ctx = context(settings, store)
    head = git_repo.git("rev-parse", "HEAD")
    run = await orch.init_run(
        store, name="demo", repo=str(git_repo.path), strict=True, leader="lead"
    )
    assert run.spec == {"leader": "lead", "strict": True, "repo": str(git_repo.path)}
    await orch.add_task(
        ctx, run.id, "A", prompt="echo a > a.txt && echo made-a", engine="shell",
        acceptance="a.txt exists",
    )  # fmt: skip
    await orch.add_task(ctx, run.id, "B", prompt="echo b > b.txt", engine="shell")
    b = await store.orch.add_dependency(run.id, "B", "A")
    assert (b.status, b.depends_on) == (TaskStatus.PENDING, ("A",))
    assert [t.key for t in await orch.ready(store, run.id)] == ["A"]

    with pytest.raises(Conflict, match="'B' is pending: it waits for A"):
        await orch.dispatch(ctx, run.id, "B")
    [dispatched] = await orch.dispatch(ctx, run.id)
    a = dispatched.task
    assert a.status == TaskStatus.DISPATCHED
    [attempt] = a.attempts
    session = await store.sessions.get(attempt.session_id)
    assert (session.status, session.run_id, session.task_key) == (
        SessionStatus.QUEUED,
        run.id,
        "A",
    )
    assert session.prompt == "echo a > a.txt && echo made-a"  # a command: nothing added
    assert session.base_ref == attempt.base_ref == head  # pinned: the checkout's HEAD
    assert attempt.worktree == str(settings.worktrees / f"{session.id}-1")
    assert attempt.branch == session.branch == f"telecoder/{session.id}"
    assert attempt.assignee == f"session:{session.id}"

    [message] = await store.inbox.list(thread=f"orch:{run.id}:A")
    assert (message.kind, message.sender, message.recipient) == (
        MessageKind.MESSAGE,
        "lead",
        f"session:{session.id}",
    )
    assert attempt.message_id == message.id
    for said in (
        "task: A",
        f"session: {session.id}",
        f"worktree: {attempt.worktree}",
        f"branch: {attempt.branch}",
        f"base: {head}",
        "acceptance: a.txt exists",
        "echo a > a.txt && echo made-a",
    ):
        assert said in message.body

    worker = build_worker(settings, store)
    done = await run_session(worker, store, session.id)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    # The worktree is where the attempt says, on its branch, and kept for the leader.
    assert Path(attempt.worktree).is_dir()
    assert branch_of(attempt.worktree) == attempt.branch
    assert (Path(attempt.worktree) / "a.txt").read_text() == "a\n"
    # Every session of the run ended, but B is not dispatched: the run is still running.
    assert (await store.runs.get(run.id)).status == RunStatus.RUNNING

    events = await orch.reconcile(store, run.id)
    assert [(e.task, e.kind, e.data["status"]) for e in events] == [
        ("A", "status", "succeeded"),
        ("B", "ready", "ready"),
    ]
    assert await orch.reconcile(store, run.id) == []  # nothing changed since
    tasks = {t.key: t for t in await store.orch.tasks(run.id)}
    assert tasks["A"].status == TaskStatus.SUCCEEDED
    assert tasks["A"].attempts[0].status == TaskStatus.SUCCEEDED
    assert tasks["B"].status == TaskStatus.READY

    [b_dispatched] = await orch.dispatch(ctx, run.id, "B")
    b_attempt = b_dispatched.task.attempts[-1]
    assert b_attempt.base_ref == head
    b_done = await run_session(worker, store, b_attempt.session_id)
    assert b_done.status == SessionStatus.SUCCEEDED, b_done.error
    await orch.reconcile(store, run.id)
    finished = await store.runs.get(run.id)
    assert finished.status == RunStatus.SUCCEEDED
    assert finished.finished_at is not None

    removed = await orch.cleanup(ctx, run.id)
    assert sorted(r["worktree"] for r in removed) == sorted([attempt.worktree, b_attempt.worktree])
    assert not Path(attempt.worktree).exists()
    assert not Path(b_attempt.worktree).exists()
    assert await orch.cleanup(ctx, run.id) == []
    # The branches were pushed: cleaning up the worktrees loses nothing.
    assert git_repo.remote_git("ls-tree", "--name-only", attempt.branch).splitlines() == [
        "README.md",
        "a.txt",
    ]


async def test_a_dirty_checkout_is_refused_in_a_strict_run(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    ctx = context(settings, store)
    (git_repo.path / "README.md").write_text("changed\n")
    (git_repo.path / "notes.txt").write_text("mine\n")
    run = await orch.init_run(store, name=None, repo=str(git_repo.path), strict=True, leader=None)
    assert orch.leader_of(run) == "leader"
    await orch.add_task(ctx, run.id, "code", prompt="echo hi", engine="shell")
    with pytest.raises(BadInput, match="uncommitted changes") as refused:
        await orch.dispatch(ctx, run.id)
    assert "README.md" in refused.value.message
    assert "notes.txt" in refused.value.message
    assert "--base" in refused.value.message
    assert await store.runs.sessions(run.id) == []  # nothing was dispatched
    assert (await store.orch.task(run.id, "code")).status == TaskStatus.READY

    # An explicit base is accepted (the task then starts from it, not from the checkout).
    [done] = await orch.dispatch(ctx, run.id, "code", base="main")
    assert done.task.attempts[-1].base_ref == "main"
    assert (await store.sessions.get(done.task.session_id or "")).base_ref == "main"
    # An answer needs no pinned code; a run that is not strict only warns.
    await orch.add_task(ctx, run.id, "ask", prompt="echo hello", engine="shell", mode="answer")
    [asked] = await orch.dispatch(ctx, run.id, "ask")
    assert asked.task.status == TaskStatus.DISPATCHED
    loose = await orch.init_run(
        store, name=None, repo=str(git_repo.path), strict=False, leader=None
    )
    await orch.add_task(ctx, loose.id, "code", prompt="echo hi", engine="shell")
    [warned] = await orch.dispatch(ctx, loose.id)
    assert any("uncommitted changes" in w for w in warned.warnings)


async def test_a_session_that_asks_is_answered_by_the_leader_and_resumes(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    settings = tuned(settings)
    ctx = context(settings, store)
    run = await orch.init_run(store, name=None, repo=str(git_repo.path), strict=True, leader="lead")
    ask = 'echo draft > draft.txt; echo "QUESTION: which name for the file?"'
    await orch.add_task(ctx, run.id, "Q", prompt=ask, engine="shell")
    [dispatched] = await orch.dispatch(ctx, run.id)
    attempt = dispatched.task.attempts[-1]
    worker = build_worker(settings, store)
    asked = await run_session(worker, store, attempt.session_id)
    assert asked.status == SessionStatus.BLOCKED, asked.error

    events = await orch.reconcile(store, run.id)
    assert [(e.kind, e.data["status"], e.data.get("question")) for e in events] == [
        ("status", "blocked", "which name for the file?")
    ]
    assert await orch.blocked(store, run.id) == [
        {
            "task": "Q",
            "status": "blocked",
            "session_id": asked.id,
            "via": "session",
            "question": "which name for the file?",
            "message_id": None,
            "from": f"session:{asked.id}",
            "thread": f"orch:{run.id}:Q",
        }
    ]
    answered = await orch.answer(store, run.id, "Q", "git mv draft.txt final.txt && echo renamed")
    assert answered == {"task": "Q", "message_id": None, "reply_id": None, "resumed": asked.id}
    assert (await store.orch.task(run.id, "Q")).status == TaskStatus.RUNNING
    assert await orch.blocked(store, run.id) == []
    with pytest.raises(Conflict, match="no open question"):
        await orch.answer(store, run.id, "Q", "again")

    done = await run_session(worker, store, asked.id)  # the same session, resumed
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.text == "renamed"
    await orch.reconcile(store, run.id)
    task = await store.orch.task(run.id, "Q")
    assert task.status == TaskStatus.SUCCEEDED
    assert [a.worktree for a in task.attempts] == [attempt.worktree]
    assert sorted(p.name for p in Path(attempt.worktree).iterdir() if p.name != ".git") == [
        "README.md",
        "final.txt",
    ]


async def test_an_inbox_question_blocks_the_task_until_the_leader_answers(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    ctx = context(settings, store)
    run = await orch.init_run(store, name=None, repo=str(git_repo.path), strict=True, leader="lead")
    await orch.add_task(ctx, run.id, "T", prompt="echo hi", engine="shell")
    [dispatched] = await orch.dispatch(ctx, run.id)
    session_id = dispatched.task.session_id
    assert session_id is not None
    agent = f"session:{session_id}"
    with pytest.raises(Conflict, match="no open question"):
        await orch.answer(store, run.id, "T", "nothing asked")
    # Its worker has it (running); its agent asks the leader in the task's thread.
    assert await store.queue.claim("w1", only=session_id) is not None
    question = await store.inbox.send(
        sender=agent,
        recipient="lead",
        thread=f"orch:{run.id}:T",
        kind=MessageKind.QUESTION,
        body="PostgreSQL or SQLite?",
    )
    events = await orch.reconcile(store, run.id)
    assert [(e.kind, e.data["status"]) for e in events] == [("status", "blocked")]
    [waiting] = await orch.blocked(store, run.id)
    assert (waiting["via"], waiting["message_id"], waiting["from"]) == (
        "inbox",
        question.id,
        agent,
    )
    assert waiting["question"] == "PostgreSQL or SQLite?"

    answered = await orch.answer(store, run.id, "T", "Both.")
    assert answered["message_id"] == question.id
    assert answered["resumed"] is None
    [reply] = await store.inbox.unread_replies(agent, reply_to=question.id)
    assert (reply.id, reply.kind, reply.sender, reply.body) == (
        answered["reply_id"],
        MessageKind.ANSWER,
        "lead",
        "Both.",
    )
    assert (await store.inbox.get(question.id)).status == MessageStatus.DONE
    assert await orch.blocked(store, run.id) == []
    task = await store.orch.task(run.id, "T")
    assert task.status == TaskStatus.RUNNING  # nothing else asks: back to work
    assert [e.kind for e in await store.orch.events(run.id)][-2:] == ["answered", "status"]
    assert await orch.reconcile(store, run.id) == []


async def test_cycles_retry_reassign_cancel_and_wait(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    ctx = context(settings, store)
    run = await orch.init_run(store, name=None, repo=str(git_repo.path), strict=True, leader="lead")
    for key in ("A", "B", "C"):
        await orch.add_task(ctx, run.id, key, prompt=f"echo {key}", engine="shell")
    await store.orch.add_dependency(run.id, "B", "A")
    await store.orch.add_dependency(run.id, "C", "B")
    with pytest.raises(BadInput, match="would form a cycle: ") as cycle:
        await store.orch.add_dependency(run.id, "A", "C")
    named = cycle.value.message.split(": ", 1)[1].split(" → ")
    assert (sorted(set(named)), len(named), named[0] == named[-1]) == (["A", "B", "C"], 4, True)
    with pytest.raises(BadInput, match="itself"):
        await store.orch.add_dependency(run.id, "A", "A")
    with pytest.raises(SessionNotFound, match="no task 'Z'"):
        await store.orch.add_dependency(run.id, "A", "Z")
    with pytest.raises(Conflict, match="already has a task 'A'"):
        await orch.add_task(ctx, run.id, "A", prompt="again")
    with pytest.raises(BadInput, match="task key"):
        await orch.add_task(ctx, run.id, "a:b", prompt="x")
    with pytest.raises(SessionNotFound, match="no run"):
        await orch.dispatch(ctx, "run_nothere")

    cursor = await store.orch.last_event(run.id)
    with pytest.raises(TimedOut):
        await orch.wait(store, run.id, after=None, seconds=0.3, interval=0.05)
    [a] = await orch.dispatch(ctx, run.id)
    events, moved = await orch.wait(store, run.id, after=cursor, seconds=5)
    assert [(e.task, e.kind) for e in events] == [("A", "dispatched")]
    assert moved == events[-1].id

    first = a.task.session_id or ""
    [cancelled] = await orch.cancel(store, run.id, "A")
    assert cancelled.status == TaskStatus.CANCELLED
    assert (await store.sessions.get(first)).status == SessionStatus.CANCELLED
    with pytest.raises(Conflict, match="ended already"):
        await orch.cancel(store, run.id, "A")
    with pytest.raises(Conflict, match="only a failed or cancelled task"):
        await orch.retry(ctx, run.id, "B")

    retried = await orch.retry(ctx, run.id, "A")
    assert isinstance(retried, orch.Dispatched)
    assert [x.number for x in retried.task.attempts] == [1, 2]
    assert [x.status for x in retried.task.attempts] == [
        TaskStatus.CANCELLED,
        TaskStatus.DISPATCHED,
    ]
    second = retried.task.session_id or ""
    assert second != first

    moved_to = await orch.reassign(ctx, run.id, "A", to="bob")
    assert isinstance(moved_to, orch.Dispatched)
    third = moved_to.task.attempts[-1]
    assert (third.number, third.assignee) == (3, "bob")
    assert (await store.sessions.get(second)).status == SessionStatus.CANCELLED
    assert [m.recipient for m in await store.inbox.list(thread=f"orch:{run.id}:A")] == [
        f"session:{first}",
        f"session:{second}",
        "bob",
    ]
    later = await orch.reassign(ctx, run.id, "C", to="carol", engine="shell")
    assert not isinstance(later, orch.Dispatched)
    assert (later.assignee, later.status) == ("carol", TaskStatus.PENDING)

    gone = await orch.cancel(store, run.id)
    assert sorted(t.key for t in gone) == ["A", "B", "C"]
    assert (await store.runs.get(run.id)).status == RunStatus.CANCELLED
    # A cancelled task whose dependencies never succeeded waits again when retried.
    again = await orch.retry(ctx, run.id, "B")
    assert not isinstance(again, orch.Dispatched)
    assert again.status == TaskStatus.PENDING
    assert (await store.runs.get(run.id)).status == RunStatus.RUNNING


async def test_an_agent_is_told_the_acceptance_criteria_a_command_is_left_alone(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    ctx = context(settings, store)
    run = await orch.init_run(store, name=None, repo=str(git_repo.path), strict=True, leader=None)
    await orch.add_task(
        ctx, run.id, "explain", prompt="Why is the sky blue?", engine="codex",
        acceptance="one paragraph", mode="answer",
    )  # fmt: skip
    await orch.add_task(
        ctx, run.id, "cmd", prompt="echo hi", engine="shell", acceptance="prints hi"
    )
    sent = {d.task.key: d.task for d in await orch.dispatch(ctx, run.id)}
    agent = await store.sessions.get(sent["explain"].session_id or "")
    assert agent.prompt == (
        "Why is the sky blue?\n\n"
        "Acceptance criteria (the task is done when they hold): one paragraph\n\n"
        "This task asks for an answer: change no files."
    )
    assert agent.engine == "codex"
    command = await store.sessions.get(sent["cmd"].session_id or "")
    assert command.prompt == "echo hi"
    with pytest.raises(BadInput, match="unknown engine 'nope'"):
        await orch.add_task(ctx, run.id, "x", prompt="x", engine="nope")


async def test_cleanup_removes_only_telecoders_own_worktrees(
    settings: Settings, store: Store, git_repo: GitRepo, tmp_path: Path
) -> None:
    ctx = context(settings, store)
    run = await orch.init_run(store, name=None, repo=str(git_repo.path), strict=True, leader=None)
    for key in ("mine", "other"):
        await orch.add_task(ctx, run.id, key, prompt="echo hi", engine="shell")
    sent = {d.task.key: d.task for d in await orch.dispatch(ctx, run.id)}
    await orch.cancel(store, run.id)
    # Recorded paths that are not a session's worktree in TeleCoder's folder stay.
    users = tmp_path / "users-dir"
    users.mkdir()
    await store.orch.update_attempt(sent["mine"], 1, worktree=str(users))
    misnamed = settings.worktrees / "someone-else-1"
    misnamed.mkdir(parents=True)
    await store.orch.update_attempt(sent["other"], 1, worktree=str(misnamed))
    assert await orch.cleanup(ctx, run.id) == []
    assert users.is_dir()
    assert misnamed.is_dir()
