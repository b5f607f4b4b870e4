"""Ask for help: a session blocks with a question, an answer resumes it in the same worktree;
the question shows in the API, the dashboard and the notifications of its ``notify`` targets.

Real store, real git, real worker and shell-engine processes; the app over HTTP (ASGI); the
notifications reach a small fake Slack Web API on 127.0.0.1. The resume of a real agent's own
session is proved in ``test_ask_for_help_agent.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from telecoder import chat, registry
from telecoder.assemble import build_forges, build_worker, build_workspace
from telecoder.domain import EventKind, FailureKind, NewSession, ResultType, Session, SessionStatus
from telecoder.engines.shell import ShellEngine, ShellParser
from telecoder.errors import Conflict
from telecoder.intake import Request as IntakeRequest
from telecoder.intake import accept
from telecoder.protocols import EngineOutcome, EngineTask, Inbound
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Outcome, Store
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo, make_repo
from tests.fakes.slack import BOT_TOKEN as SLACK_TOKEN
from tests.fakes.slack import SIGNING_SECRET, FakeSlack, fake_slack
from tests.fakes.telegram import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram import FakeTelegram, User, fake_telegram
from tests.integration.test_engine_shell import all_events, execute, tuned
from tests.server import FakeRun, client, serving, until

CAROL = User(id=4242, username="carol", first_name="Carol")
_FIXTURES = (fake_slack, fake_telegram)

HTML = {"accept": "text/html"}


async def run_next(worker: Any, store: Store, session_id: str) -> Session:
    claimed = await store.queue.claim(worker.id, only=session_id)
    assert claimed is not None
    async with asyncio.timeout(30):
        done = await worker.execute(claimed)
    assert done is not None
    return done


async def test_a_task_that_asks_waits_and_the_answer_resumes_it_in_its_worktree(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = NewSession(
        repo=str(git_repo.path),
        prompt='echo draft > draft.txt; echo "Drafted."; echo "QUESTION: which name for the file?"',
        engine="shell",
    )
    asked = await execute(worker, store, new)
    assert asked.status == SessionStatus.BLOCKED, asked.error
    assert asked.question == "which name for the file?"
    assert asked.result is not None
    assert asked.result.type == ResultType.BRANCH  # the diff was pushed before it asked
    assert asked.finished_at is None
    worktree = settings.worktrees / f"{new.id}-1"
    assert worktree.is_dir()  # kept for the answer
    events = await all_events(store, new.id)
    blocked = [e.data for e in events if e.kind == EventKind.STATUS][-1]
    assert blocked == {
        "status": "blocked",
        "reason": "waiting for an answer",
        "question": "which name for the file?",
    }
    with pytest.raises(Conflict, match="not waiting for an answer"):
        await chat.answer(store, (await store.sessions.create(_other(git_repo))).id, "hi")

    # The answer is the next turn's prompt (for the shell engine, a command), in the same place.
    answered = await chat.answer(store, new.id, "git mv draft.txt final.txt && echo renamed")
    assert answered.session.status == SessionStatus.QUEUED
    assert answered.session.question is None
    with pytest.raises(Conflict, match="not waiting for an answer"):
        await chat.answer(store, new.id, "again")
    done = await run_next(worker, store, new.id)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.question is None
    assert done.result is not None
    assert done.result.text == "renamed"
    files = git_repo.remote_git("ls-tree", "--name-only", done.branch).splitlines()
    assert "final.txt" in files
    assert "draft.txt" not in files
    attempts = await store.sessions.attempts(new.id)
    assert [a.workspace_path for a in attempts] == [str(worktree)] * 2
    said = [e.data for e in await all_events(store, new.id) if e.kind == EventKind.MESSAGE]
    assert said == [{"role": "user", "text": "git mv draft.txt final.txt && echo renamed"}]
    assert not worktree.exists()  # the task ended: its worktree is cleaned up


def _other(repo: GitRepo) -> NewSession:
    return NewSession(repo=str(repo.path), prompt="echo hi", engine="shell")


async def test_a_task_that_asks_nothing_takes_no_message(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    # Without a notify target or thread, a question at the end of an answer is an answer.
    plain = await execute(worker, store, _other_asking(git_repo))
    assert plain.status == SessionStatus.SUCCEEDED
    assert plain.question is None
    with pytest.raises(Conflict, match="it takes no follow-ups"):
        await store.sessions.add_message(plain.id, "hello")
    # Someone to ask (a notify target): the same words make it wait.
    watched = await execute(worker, store, _other_asking(git_repo, notify=("slack:U1",)))
    assert watched.status == SessionStatus.BLOCKED
    assert watched.question == "Should I also update the docs, or do you want them as they are?"


def _other_asking(repo: GitRepo, **kw: Any) -> NewSession:
    question = "Should I also update the docs, or do you want them as they are?"
    said = f"echo 'Looked at it.'; echo; echo '{question}'"
    return NewSession(repo=str(repo.path), prompt=said, engine="shell", **kw)


class ResumableShell(ShellEngine):
    """The shell engine with an agent session id, as a resumable agent reports one: a
    failing check can then be revised (or asked about) instead of failing the session."""

    name = "test-resumable-shell"

    def parser(self, task: EngineTask) -> ShellParser:
        return _ResumableParser()


class _ResumableParser(ShellParser):
    def finish(self, exit_code: int | None) -> EngineOutcome:
        found = super().finish(exit_code)
        return EngineOutcome(
            ok=found.ok,
            text=found.text,
            session_id="shell-conversation",
            failure_kind=found.failure_kind,
            error=found.error,
        )


@pytest.fixture
def resumable() -> Iterator[str]:
    remove = registry.register("engines", ResumableShell.name, ResumableShell)
    yield ResumableShell.name
    remove()


async def test_checks_that_keep_failing_ask_when_someone_watches(
    settings: Settings, store: Store, tmp_path: Path, resumable: str
) -> None:
    config = "verify:\n  - test -f ok.txt\nmax_revisions: 0\n"
    repo = make_repo(tmp_path, files={"README.md": "hi\n", ".telecoder.yml": config})
    worker = build_worker(tuned(settings), store)

    def new(**kw: Any) -> NewSession:
        return NewSession(repo=str(repo.path), prompt="echo start > a.txt", engine=resumable, **kw)

    unwatched = await execute(worker, store, new())
    assert (unwatched.status, unwatched.failure_kind) == (
        SessionStatus.FAILED,
        FailureKind.VERIFY_FAILED,
    )
    assert unwatched.question is None

    watched = await execute(worker, store, new(notify=("telegram:42",)))
    assert watched.status == SessionStatus.BLOCKED
    assert watched.failure_kind == FailureKind.VERIFY_FAILED
    assert watched.question is not None
    assert watched.question.startswith("verification failed: 1 check failed")
    assert "test -f ok.txt" in watched.question
    assert "How should I go on?" in watched.question
    await chat.answer(store, watched.id, "echo fine > ok.txt")
    done = await run_next(worker, store, watched.id)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert (done.failure_kind, done.question) == (None, None)
    files = repo.remote_git("ls-tree", "--name-only", done.branch).splitlines()
    assert sorted(files) == [".telecoder.yml", "README.md", "a.txt", "ok.txt"]


async def test_a_budget_stop_asks_for_a_raise_and_the_raise_clears_it(
    store: Store, git_repo: GitRepo
) -> None:
    from telecoder.amounts import BudgetChange
    from telecoder.budgeting import Stop

    await store.sessions.create(_other(git_repo))
    claimed = await store.queue.claim("w")
    assert claimed is not None
    stop = Stop(FailureKind.BUDGET_REACHED, "the budget of $0.10 is spent", blocks=True)
    blocked = await store.queue.finish(claimed.lease, stop.outcome())
    assert (blocked.status, blocked.question) == (SessionStatus.BLOCKED, stop.error)
    raised = await store.budgets.raise_session(blocked.id, BudgetChange(amount=1.0))
    assert (raised.status, raised.question) == (SessionStatus.QUEUED, None)


async def _blocked_with_question(store: Store, repo: GitRepo, **kw: Any) -> Session:
    await store.sessions.create(NewSession(repo=str(repo.path), prompt="p", engine="shell", **kw))
    claimed = await store.queue.claim("w")
    assert claimed is not None
    outcome = Outcome(status=SessionStatus.BLOCKED, question="Which provider: A or B?")
    return await store.queue.finish(claimed.lease, outcome)


async def test_the_api_and_the_dashboard_answer(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    session = await _blocked_with_question(store, git_repo)
    other = await _blocked_with_question(store, git_repo)
    app = create_app(settings, store)
    async with client(app) as c:
        shown = (await c.get(f"/api/sessions/{session.id}")).json()
        listed = (await c.get("/api/sessions")).json()["sessions"]
        missing = await c.post("/api/sessions/nosuchone/answer", json={"text": "A"})
        empty = await c.post(f"/api/sessions/{session.id}/answer", json={"text": "  "})
        answered = await c.post(f"/api/sessions/{session.id}/answer", json={"text": "A"})
        again = await c.post(f"/api/sessions/{session.id}/answer", json={"text": "A"})
        after = (await c.get(f"/api/sessions/{session.id}")).json()
        page = (await c.get(f"/sessions/{other.id}", headers=HTML)).text
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
        assert token is not None
        forged = await c.post(f"/sessions/{other.id}/answer", data={"text": "B"})
        form = await c.post(
            f"/sessions/{other.id}/answer", data={"text": "B", "csrf_token": token.group(1)}
        )
        refused = await c.post(
            "/api/sessions",
            json={"repo": str(git_repo.path), "prompt": "echo", "notify": ["jira:someone"]},
        )
    assert shown["question"] == "Which provider: A or B?"
    assert {s["id"]: s["question"] for s in listed}[session.id] == "Which provider: A or B?"
    assert missing.status_code == 404
    assert empty.status_code == 422
    assert answered.status_code == 202
    assert answered.json()["session_id"] == session.id
    assert again.status_code == 409
    assert "not waiting for an answer" in again.json()["detail"]
    assert (after["status"], after["question"]) == ("queued", None)
    assert "Which provider: A or B?" in page
    assert 'id="answer-form"' in page
    assert forged.status_code == 403
    assert form.status_code == 303
    answered_there = await store.sessions.get(other.id)
    assert (answered_there.status, answered_there.question) == (SessionStatus.QUEUED, None)
    said = [e.data for e in await all_events(store, other.id) if e.kind == EventKind.MESSAGE]
    assert said[-1]["text"] == "B"
    assert refused.status_code == 422
    assert "cannot notify on 'jira'" in refused.text
    assert "none is configured" in refused.text


# --- notifications through the real Slack and Telegram channels, against their fakes ---------


@pytest.fixture
def notifying(settings: Settings, fake_slack: FakeSlack, fake_telegram: FakeTelegram) -> Settings:
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(SLACK_TOKEN),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": fake_slack.api_url,
            "telegram_bot_token": SecretStr(TELEGRAM_TOKEN),
            "telegram_api_url": fake_telegram.url,
            "telegram_allowed_users": (str(CAROL.id),),
            "notify_me": f"slack:U0CAROL,telegram:{CAROL.id}",
            "public_url": "https://tc.example",
            "notify_poll_seconds": 0.05,
        }
    )


async def test_notify_targets_are_told_on_slack_and_telegram(
    notifying: Settings,
    store: Store,
    git_repo: GitRepo,
    fake_slack: FakeSlack,
    fake_telegram: FakeTelegram,
) -> None:
    fake_telegram.dm(CAROL, "/start")  # a bot may write only to someone who wrote to it
    app = create_app(notifying, store)
    body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"}
    async with client(app) as c:
        unknown = await c.post("/api/sessions", json={**body, "notify": ["jira:someone"]})
        created = await c.post(
            "/api/sessions", json={**body, "notify": ["slack:@me", "telegram:@me"]}
        )
        assert created.status_code == 201, created.text
        session = created.json()
        run = await FakeRun.start(store)
        asks = Outcome(status=SessionStatus.BLOCKED, question="Which provider: A or B?")
        await store.queue.finish(run.claimed.lease, asks)

        def dm() -> list[str]:
            return [
                a["text"]
                for a in fake_slack.called("chat.postMessage")
                if a["channel"] == "D0CAROL"
            ]

        def telegrammed() -> list[str]:
            said = [m.text for m in fake_telegram.bot_messages(CAROL.id)]
            return [text for text in said if "TeleCoder session" in text]  # not /start's help

        await until(lambda: bool(dm()) and bool(telegrammed()), seconds=10)
        page = (await c.get(f"/sessions/{session['id']}", headers=HTML)).text
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
        assert token is not None
        off = await c.post(
            f"/sessions/{session['id']}/notify",
            data={"channel": "slack", "on": "0", "csrf_token": token.group(1)},
        )
        toggled = await store.sessions.get(session["id"])
        answered = await c.post(f"/api/sessions/{session['id']}/answer", json={"text": "A"})
        assert answered.status_code == 202
        run = await FakeRun.start(store)
        await store.queue.finish(
            run.claimed.lease, Outcome(status=SessionStatus.FAILED, error="boom", retryable=False)
        )
        await until(lambda: len(telegrammed()) == 2, seconds=10)
    assert unknown.status_code == 422
    assert "cannot notify on 'jira'" in unknown.text
    assert "known: slack, telegram" in unknown.text
    assert session["notify"] == ["slack:U0CAROL", f"telegram:{CAROL.id}"]
    sid = session["id"]
    expected = [
        f"❓ TeleCoder session {sid} needs your input: echo hi",
        "It asks: Which provider: A or B?",
        f'Answer: telecoder answer {sid} "…"',
        f"https://tc.example/sessions/{sid}",
    ]
    assert dm()[0].splitlines() == expected
    assert "Which provider: A or B?" in telegrammed()[0]
    assert f"telecoder answer {sid}" in telegrammed()[0]
    # The dashboard's toggle: "Stop notifying me on Slack" took Slack off; Telegram stays.
    assert 'id="notify-slack"' in page
    assert "Stop notifying me on Slack" in page
    assert off.status_code == 303
    assert toggled.notify == (f"telegram:{CAROL.id}",)
    assert len(dm()) == 1  # Slack was not told of the end
    assert telegrammed()[1].startswith(f"❌ TeleCoder session {sid} ended failed")
    assert "boom" in telegrammed()[1]


async def test_a_reply_in_the_thread_answers_the_question(
    notifying: Settings, store: Store, git_repo: GitRepo, fake_slack: FakeSlack
) -> None:
    origin = {"channel": "slack", "thread": "C1/1.5", "channel_id": "C1", "thread_ts": "1.5"}
    session = await _blocked_with_question(store, git_repo, thread="slack:C1/1.5", origin=origin)
    app = create_app(notifying, store)
    async with client(app):
        conversations = app.state.telecoder.conversations
        assert conversations is not None
        reply = Inbound(
            channel="slack", key="Ev1", thread="C1/1.5", place="C1", sender="U0CAROL", text="B"
        )
        received = await conversations.receive(reply)
        again = await conversations.receive(reply)
    assert (received.action, received.session_id) == ("continued", session.id)
    assert again.action == "duplicate"
    queued = await store.sessions.get(session.id)
    assert (queued.status, queued.question) == (SessionStatus.QUEUED, None)
    said = [e.data for e in await all_events(store, session.id) if e.kind == EventKind.MESSAGE]
    assert said == [{"role": "user", "text": "B", "from": "slack:U0CAROL"}]


async def test_notify_targets_are_checked_at_intake(
    settings: Settings, git_repo: GitRepo, home: Path
) -> None:
    mine = settings.model_copy(update={"notify_me": "slack:U5"})
    request = IntakeRequest(
        repo=str(git_repo.path), prompt="echo hi", notify=("slack:@me", "telegram:9", "slack:U5")
    )
    accepted = await accept(
        request,
        settings=mine,
        workspace=build_workspace(mine),
        engines=registry.names("engines"),
        forges=build_forges(mine),
        notify_channels={"slack", "telegram"},
    )
    assert accepted.session.notify == ("slack:U5", "telegram:9")
    # A channel's sender is its @me.
    theirs = dataclasses.replace(request, notify=("telegram:@me",), notify_me={"telegram": "77"})
    accepted = await accept(
        theirs,
        settings=mine,
        workspace=build_workspace(mine),
        engines=registry.names("engines"),
        forges=build_forges(mine),
        notify_channels={"slack", "telegram"},
    )
    assert accepted.session.notify == ("telegram:77",)
    # The CLI: no channel configured here, so any target is refused, naming none.
    env = cli_env(home, TELECODER_NOTIFY_ME="slack:U5")
    refused = telecoder(
        "run", "echo hi", "--repo", str(git_repo.path), "--engine", "shell",
        "--notify", "slack:@me", env=env,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "cannot notify on 'slack'" in refused.stderr
    assert "none is configured" in refused.stderr


async def test_telecoder_answer_against_a_server(
    settings: Settings, store: Store, git_repo: GitRepo, tmp_path: Path
) -> None:
    session = await _blocked_with_question(store, git_repo)
    env = cli_env(tmp_path / "client-home")
    async with serving(create_app(settings, store)) as url:
        answered = await asyncio.to_thread(
            telecoder, "answer", session.id, "use A", "--server", url, "--json", env=env
        )
        again = await asyncio.to_thread(
            telecoder, "answer", session.id, "use A", "--server", url, env=env
        )
    assert answered.returncode == 0, answered.stderr
    shown = json.loads(answered.stdout)
    assert (shown["id"], shown["status"], shown["question"]) == (session.id, "queued", None)
    assert again.returncode == 4
    assert "not waiting for an answer" in again.stderr
