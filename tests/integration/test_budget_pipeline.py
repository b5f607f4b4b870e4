"""Limits at work in real attempts (Worker → Pipeline → LocalRuntime → git): time limits from the
task, the repository and the settings; partial results pushed as drafts when the time or a budget
runs out; a session blocked on its budget that resumes the SAME agent conversation when raised.

The acceptance test runs a real agent CLI through the gateway against the fake model server,
with its model priced so dearly that the first request spends a budget of a few cents: the
gateway holds the next request and the session goes ``blocked``; raising the budget resumes the
same conversation to a pushed result. Engines that cannot be resumed get the same stop from the
worker (``stop_session``), as the gateway would give it.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from telecoder.amounts import BudgetChange
from telecoder.assemble import build_worker
from telecoder.domain import (
    AttemptStatus,
    EventKind,
    FailureKind,
    NewSession,
    ResultType,
    Session,
    SessionStatus,
)
from telecoder.errors import Conflict
from telecoder.recorder import StopReason
from telecoder.settings import Settings
from telecoder.store import Store, UsageRow, open_store
from telecoder.worker import Worker
from tests.conftest import GitRepo, make_repo
from tests.engine_cases import PROMPT
from tests.engine_driver import TOOLS_BIN
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_engine_shell import (
    all_events,
    execute,
    request,
    tuned,
    wait_for_output,
)


async def test_a_timeout_pushes_what_the_agent_did_as_a_partial_draft(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = request(git_repo, "echo half > half.txt && sleep 30", timeout_seconds=1.5)
    done = await execute(worker, store, new)
    assert (done.status, done.failure_kind) == (SessionStatus.FAILED, FailureKind.TIMEOUT)
    assert done.error == (
        "the session ran past its time limit of 1.5 s and was stopped; what the agent did is "
        "pushed as a partial result (a draft)"
    )
    result = done.result
    assert result is not None
    assert (result.type, result.partial, result.branch) == (ResultType.BRANCH, True, new.branch)
    assert git_repo.remote_git("show", f"{new.branch}:half.txt") == "half"
    message = git_repo.remote_git("log", "-1", "--format=%B", new.branch)
    assert message.splitlines()[0] == "[partial] echo half > half.txt && sleep 30"
    assert message.strip().endswith(f"TeleCoder-Session: {new.id}\nTeleCoder-Partial: timeout")
    assert result.commit == git_repo.remote_git("rev-parse", new.branch)
    events = await all_events(store, new.id)
    results = [e.data for e in events if e.kind == EventKind.RESULT]
    assert [r["partial"] for r in results] == [True]
    assert {"step": "committing", "partial": "timeout"} in [e.data for e in events]
    assert not (settings.worktrees / f"{new.id}-1").exists()


async def test_a_timeout_with_nothing_changed_pushes_nothing(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = request(git_repo, "sleep 30", timeout_seconds=1)
    done = await execute(worker, store, new)
    assert (done.status, done.failure_kind) == (SessionStatus.FAILED, FailureKind.TIMEOUT)
    assert done.error == "the session ran past its time limit of 1 s and was stopped"
    assert done.result is None
    assert git_repo.remote_git("branch", "--list", new.branch) == ""


async def test_the_repository_sets_limits_the_task_does_not(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path,
        name="limited",
        files={"README.md": "x\n", ".telecoder.yml": "budget: {usd: 1.5, max_time: 1s}\n"},
    )
    worker = build_worker(tuned(settings, timeout_seconds=60, budget_usd=9.0), store)
    started = asyncio.get_running_loop().time()
    by_repo = await execute(worker, store, request(repo, "sleep 20"))
    assert asyncio.get_running_loop().time() - started < 15
    assert (by_repo.failure_kind, by_repo.budget_usd) == (FailureKind.TIMEOUT, 1.5)
    assert by_repo.error == "the session ran past its time limit of 1 s and was stopped"
    # The task's own limits beat the repository's.
    own = await execute(worker, store, request(repo, "true", budget_usd=0.5, timeout_seconds=30))
    assert (own.status, own.budget_usd) == (SessionStatus.SUCCEEDED, 0.5)


async def test_the_settings_budget_is_the_last_default(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings, budget_usd=0.25), store)
    done = await execute(worker, store, request(git_repo, "true"))
    assert (done.status, done.budget_usd) == (SessionStatus.SUCCEEDED, 0.25)
    none = await execute(build_worker(tuned(settings), store), store, request(git_repo, "true"))
    assert none.budget_usd is None


async def run_until_output(worker: Worker, store: Store, new: NewSession) -> asyncio.Task:
    await store.sessions.create(new)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    running = asyncio.create_task(worker.execute(claimed))
    await wait_for_output(store, new.id)
    return running


async def test_a_budget_an_engine_cannot_resume_from_ends_with_a_partial_result(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = request(git_repo, "echo half > half.txt && echo started && sleep 30", budget_usd=0.01)
    running = await run_until_output(worker, store, new)
    assert worker.stop_session(new.id, StopReason.BUDGET)
    async with asyncio.timeout(30):
        done = await running
    assert done is not None
    assert (done.status, done.failure_kind) == (SessionStatus.FAILED, FailureKind.BUDGET_REACHED)
    assert done.error == (
        "budget reached: $0.00 of $0.01 — raise it or stop; what the agent did is pushed as a "
        "partial result (a draft)"
    )
    assert done.result is not None
    assert done.result.partial
    message = git_repo.remote_git("log", "-1", "--format=%B", new.branch)
    assert message.strip().endswith("TeleCoder-Partial: budget_reached")
    assert not (settings.worktrees / f"{new.id}-1").exists()


# --- a real agent: blocked on its budget, resumed when it is raised ------------------------------

MODEL = "claude-sonnet-4-5"
STEP_ONE = Reply(text="Starting.", command="echo one > one.txt")
RESUMED = "The budget was raised to"
RESUME_SCRIPT = (
    Reply(text="Going on.", command="echo two > two.txt"),
    Reply(text="Finished: one.txt and two.txt."),
)


@pytest.fixture
def agent_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_server_budget: FakeModelServer
) -> Settings:
    """Settings (and the operator's environment) that run Claude Code against the fake."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model_server_budget.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
    home = tmp_path / "agent-home"
    home.mkdir()
    return Settings(
        home=home,
        lease_seconds=5,
        heartbeat_seconds=0.5,
        poll_seconds=0.05,
        kill_grace_seconds=1.0,
        agent_path=str(TOOLS_BIN),
        model_retries=1,
        runtime="local",
        # $1000 per million tokens: the fake's 120 in / 15 out cost $0.135 a request.
        prices={MODEL: (1000.0, 1000.0)},
    )


@pytest.fixture
def model_server_budget():
    # The first request spends the budget: the gateway holds the second.
    script = (STEP_ONE, Reply(text="Finished before the budget ran out?"))
    with FakeModelServer(default=script, scripts={RESUMED: RESUME_SCRIPT}) as server:
        yield server


async def blocked_then_resumed(
    settings: Settings, server: FakeModelServer, repo: GitRepo, db: Path, *, budget: float
) -> tuple[Session, Session, int]:
    """Run a Claude Code session under ``budget`` until the gateway stops it, then raise the
    budget by a dollar and run it again; the session as it waited, as it ended, and how many
    requests the model had seen when it waited."""
    store = await open_store(f"sqlite:///{db}", lease_seconds=5)
    try:
        worker = build_worker(settings, store)
        new = NewSession(
            repo=str(repo.path), prompt=PROMPT, engine="claude-code", model=MODEL, budget_usd=budget
        )
        await store.sessions.create(new)
        claimed = await store.queue.claim(worker.id)
        assert claimed is not None
        async with asyncio.timeout(120):
            blocked = await worker.execute(claimed)
        assert blocked is not None
        assert (blocked.status, blocked.failure_kind) == (
            SessionStatus.BLOCKED,
            FailureKind.BUDGET_REACHED,
        ), blocked.error
        worktree = settings.worktrees / f"{new.id}-1"
        assert worktree.is_dir()  # kept, and nothing pushed
        assert (settings.engine_homes / new.id).is_dir()
        assert repo.remote_git("branch", "--list", new.branch) == ""
        (first,) = await store.sessions.attempts(new.id)
        assert first.engine_session_id
        assert first.status == AttemptStatus.SUCCEEDED  # it ended as planned: waiting
        events = await all_events(store, new.id)
        assert events[-1].data["reason"] == blocked.error

        asked = len(server.model_requests())
        raised = await store.budgets.raise_session(new.id, BudgetChange(1.0, add=True))
        assert raised.status == SessionStatus.QUEUED
        again = await store.queue.claim(worker.id)
        assert again is not None
        async with asyncio.timeout(120):
            done = await worker.execute(again)
        assert done is not None
        assert done.status == SessionStatus.SUCCEEDED, done.error
        assert done.result is not None
        assert not done.result.partial
        assert done.result.text == "Finished: one.txt and two.txt."
        assert done.budget_usd == pytest.approx(budget + 1.0)
        changed = repo.remote_git("diff", "--name-only", "main", new.branch).splitlines()
        assert "two.txt" in changed
        subject = repo.remote_git("log", "-1", "--format=%s", new.branch)
        assert subject == PROMPT  # the task's, not the resume prompt
        first, second = await store.sessions.attempts(new.id)
        assert second.engine_session_id == first.engine_session_id
        assert second.workspace_path == first.workspace_path == str(worktree)
        later = [json.dumps(r.body) for r in server.model_requests()[asked:]]
        resumed = [body for body in later if RESUMED in body]
        assert resumed, "the agent was not told the budget was raised"
        # The same conversation: the resumed request still holds the first prompt.
        assert any(PROMPT in body for body in resumed)
        events = await all_events(store, new.id)
        statuses = [e.data.get("status") for e in events if e.kind == EventKind.STATUS]
        assert statuses == ["queued", "running", "blocked", "queued", "running", "succeeded"]
        assert not worktree.exists()
        return blocked, done, asked
    finally:
        await store.close()


@pytest.mark.usefixtures("agent_tools")
async def test_a_spent_budget_holds_the_first_request_and_a_raise_resumes_the_conversation(
    agent_settings: Settings,
    model_server_budget: FakeModelServer,
    git_repo: GitRepo,
    tmp_path: Path,
) -> None:
    blocked, _, asked = await blocked_then_resumed(
        agent_settings, model_server_budget, git_repo, tmp_path / "b.db", budget=0.0
    )
    assert blocked.error == "budget reached: $0.00 of $0.00 — raise it or stop"
    assert asked == 0  # every request was held until the raise


@pytest.mark.usefixtures("agent_tools")
async def test_a_session_blocked_on_its_budget_resumes_the_same_conversation(
    agent_settings: Settings,
    model_server_budget: FakeModelServer,
    git_repo: GitRepo,
    tmp_path: Path,
) -> None:
    """The issue's acceptance: a budget of a few cents against expensive usage."""
    blocked, done, _ = await blocked_then_resumed(
        agent_settings, model_server_budget, git_repo, tmp_path / "b.db", budget=0.05
    )
    assert blocked.error is not None
    assert re.fullmatch(r"budget reached: \$0\.\d\d of \$0\.05 — raise it or stop", blocked.error)
    assert blocked.cost_usd >= 0.135
    bodies = [json.dumps(r.body) for r in model_server_budget.model_requests()]
    assert not any("Finished before" in b for b in bodies)  # held: never reached the model
    assert git_repo.remote_git("show", f"{blocked.branch}:one.txt") == "one"  # step one, kept
    assert 0.135 * 3 <= done.cost_usd < 1.05  # the gateway's figures, both attempts


# --- period budgets at work ---------------------------------------------------------------------


async def test_an_attempt_that_crosses_a_period_budget_says_so_once(
    settings: Settings, store: Store, git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    await store.budgets.set("global", "daily", 1.0)
    await store.usage.record(
        UsageRow(endpoint="e", api="anthropic", status=200, latency_ms=1.0, cost_usd=0.95)
    )
    worker = build_worker(tuned(settings), store)
    first = await execute(worker, store, request(git_repo, "true"))
    alerts = [e.data for e in await all_events(store, first.id) if e.kind == EventKind.BUDGET_ALERT]
    assert [(a["scope"], a["period"], a["level"]) for a in alerts] == [
        ("global", "daily", 80),
        ("global", "daily", 90),
    ]
    assert alerts[0]["message"].startswith("daily budget at 80 %: $0.95 of $1.00")
    assert "budget alert (session" in caplog.text
    second = await execute(worker, store, request(git_repo, "true"))
    assert not [e for e in await all_events(store, second.id) if e.kind == EventKind.BUDGET_ALERT]


async def test_a_worker_starts_no_new_session_while_a_period_budget_is_spent(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    await store.budgets.set("global", "daily", 0.5)
    await store.usage.record(
        UsageRow(endpoint="e", api="anthropic", status=200, latency_ms=1.0, cost_usd=0.5)
    )
    new = request(git_repo, "echo later")
    await store.sessions.create(new)
    worker = build_worker(tuned(settings), store)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        reason = "waiting: daily budget reached ($0.50 of $0.50)"
        async with asyncio.timeout(10):
            while (await store.sessions.get(new.id)).error != reason:  # noqa: ASYNC110 (polls the db)
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # several claims later: still waiting
        waiting = await store.sessions.get(new.id)
        assert (waiting.status, waiting.attempt) == (SessionStatus.QUEUED, 0)
        await store.budgets.set("global", "daily", 5.0)  # raised: it starts
        async with asyncio.timeout(30):
            while not (done := await store.sessions.get(new.id)).status.terminal:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert done.status == SessionStatus.SUCCEEDED, done.error
        statuses = [e.data for e in await all_events(store, new.id) if e.kind == EventKind.STATUS]
        assert statuses[:2] == [{"status": "queued"}, {"status": "queued", "reason": reason}]
    finally:
        stop.set()
        await running


@pytest.mark.usefixtures("agent_tools")
async def test_cancelling_a_session_blocked_on_its_budget_ends_it_and_cleans_up(
    agent_settings: Settings, git_repo: GitRepo, tmp_path: Path
) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'c.db'}", lease_seconds=5)
    try:
        worker = build_worker(agent_settings, store)
        new = NewSession(
            repo=str(git_repo.path), prompt=PROMPT, engine="claude-code", model=MODEL, budget_usd=0
        )
        await store.sessions.create(new)
        claimed = await store.queue.claim(worker.id)
        assert claimed is not None
        async with asyncio.timeout(120):
            blocked = await worker.execute(claimed)
        assert blocked is not None
        assert blocked.status == SessionStatus.BLOCKED
        worktree = agent_settings.worktrees / f"{new.id}-1"
        assert worktree.is_dir()
        cancelled = await store.sessions.cancel(new.id)
        assert (cancelled.status, cancelled.error) == (
            SessionStatus.CANCELLED,
            "cancelled while it waited for its budget to be raised",
        )
        assert await worker.pipeline.sweep() == [new.id]
        assert not worktree.exists()
        assert not (agent_settings.engine_homes / new.id).exists()
        with pytest.raises(Conflict):
            await store.budgets.raise_session(new.id, BudgetChange(1.0, add=True))
    finally:
        await store.close()


@pytest.mark.usefixtures("agent_tools")
async def test_a_resumed_session_handed_back_at_shutdown_resumes_again(
    agent_settings: Settings,
    model_server_budget: FakeModelServer,
    git_repo: GitRepo,
    tmp_path: Path,
) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 's.db'}", lease_seconds=5)
    try:
        worker = build_worker(agent_settings, store)
        new = NewSession(
            repo=str(git_repo.path), prompt=PROMPT, engine="claude-code", model=MODEL, budget_usd=0
        )
        await store.sessions.create(new)
        claimed = await store.queue.claim(worker.id)
        assert claimed is not None
        async with asyncio.timeout(120):
            assert (await worker.execute(claimed)).status == SessionStatus.BLOCKED  # type: ignore[union-attr]
        await store.budgets.raise_session(new.id, BudgetChange(1.0, add=True))
        resumed = await store.queue.claim(worker.id)
        assert resumed is not None
        running = asyncio.create_task(worker.execute(resumed))
        async with asyncio.timeout(60):
            while not any(  # noqa: ASYNC110 (polls the db)
                e.data.get("step") == "engine_started" for e in await all_events(store, new.id)
            ):
                await asyncio.sleep(0.05)
        assert worker.stop_session(new.id, StopReason.SHUTDOWN)  # handed back half-way
        assert await running is None
        worktree = agent_settings.worktrees / f"{new.id}-1"
        assert worktree.is_dir()  # kept for the next attempt
        again = await store.queue.claim(worker.id)
        assert again is not None
        async with asyncio.timeout(120):
            done = await worker.execute(again)
        assert done is not None
        assert done.status == SessionStatus.SUCCEEDED, done.error
        attempts = await store.sessions.attempts(new.id)
        assert [a.status for a in attempts] == [
            AttemptStatus.SUCCEEDED,
            AttemptStatus.RELEASED,
            AttemptStatus.SUCCEEDED,
        ]
        assert attempts[2].engine_session_id == attempts[0].engine_session_id
    finally:
        await store.close()
