"""Multi-step tasks: steps run in order in one session and one agent conversation, a checkpoint
commit pushed after each; the first failed step stops the rest. The shell engine where a step's
command is enough; Claude Code against the fake model server where the conversation is the point.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from telecoder.assemble import build_worker
from telecoder.domain import EventKind, FailureKind, NewSession, Session, SessionStatus
from telecoder.settings import Settings
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo
from tests.engine_cases import E2E_BY_ID, agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_chat import attempts_of


def tuned(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"kill_grace_seconds": 1.0, **changes})


async def run_steps(settings: Settings, store: Store, repo: GitRepo, *steps: str) -> Session:
    new = NewSession(
        repo=str(repo.path), prompt="\n".join(steps), engine="shell", steps=steps, max_attempts=1
    )
    await store.sessions.create(new)
    worker = build_worker(tuned(settings), store)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    async with asyncio.timeout(30):
        done = await worker.execute(claimed)
    assert done is not None
    return done


async def step_progress(store: Store, session_id: str) -> list[tuple[str, int]]:
    return [
        (e.data["step"], e.data["number"])
        for e in await store.events.list(session_id)
        if e.kind == EventKind.PROGRESS and str(e.data.get("step", "")).startswith("step_")
    ]


async def test_steps_run_in_order_with_a_pushed_checkpoint_after_each(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    done = await run_steps(
        settings, store, git_repo,
        "echo one >> steps.txt", "echo two >> steps.txt", "echo three >> steps.txt",
    )  # fmt: skip
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.steps == (
        "echo one >> steps.txt",
        "echo two >> steps.txt",
        "echo three >> steps.txt",
    )
    assert done.result is not None
    assert done.result.branch == done.branch
    head = git_repo.remote_git("rev-parse", done.branch)
    assert done.result.commit == head
    assert git_repo.remote_git("show", f"{head}:steps.txt").split() == ["one", "two", "three"]
    subjects = git_repo.remote_git("log", "--format=%s", f"main..{head}").splitlines()
    assert subjects == [
        "Step 3/3: echo three >> steps.txt",
        "Step 2/3: echo two >> steps.txt",
        "Step 1/3: echo one >> steps.txt",
    ]
    assert await step_progress(store, done.id) == [
        ("step_started", 1), ("step_done", 1),
        ("step_started", 2), ("step_done", 2),
        ("step_started", 3), ("step_done", 3),
    ]  # fmt: skip


async def test_a_failed_step_stops_the_rest_with_the_earlier_steps_pushed(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    done = await run_steps(
        settings, store, git_repo,
        "echo one >> steps.txt", "echo half >> steps.txt; echo nope >&2; exit 4",
        "echo three >> steps.txt",
    )  # fmt: skip
    assert done.status == SessionStatus.FAILED
    assert done.failure_kind == FailureKind.ENGINE_ERROR
    assert done.error is not None
    assert done.error.startswith("step 2 of 3 failed: ")
    assert "nope" in done.error
    # The branch holds step 1's commit; the failed step's half-done change was not pushed.
    assert done.result is not None
    assert done.result.partial
    head = git_repo.remote_git("rev-parse", done.branch)
    assert done.result.commit == head
    assert git_repo.remote_git("rev-list", "--count", f"main..{head}") == "1"
    assert git_repo.remote_git("show", f"{head}:steps.txt") == "one"
    progress = await step_progress(store, done.id)
    assert progress == [
        ("step_started", 1), ("step_done", 1), ("step_started", 2), ("step_failed", 2),
    ]  # fmt: skip
    [attempt] = await store.sessions.attempts(done.id)
    assert attempt.pushed_sha == head


async def test_a_first_step_that_fails_pushes_nothing(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    done = await run_steps(settings, store, git_repo, "exit 2", "echo never > x.txt")
    assert done.status == SessionStatus.FAILED
    assert done.error is not None
    assert done.error.startswith("step 1 of 2 failed")
    assert done.result is None
    assert git_repo.remote_git("ls-remote", ".", done.branch) == ""


def test_the_cli_takes_steps_and_refuses_an_empty_one(git_repo: GitRepo, home: Path) -> None:
    env = cli_env(home)
    ran = telecoder(
        "run", "--repo", str(git_repo.path), "--engine", "shell", "--json",
        "--step", "echo a > a.txt", "--step", "echo b > b.txt", env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    done = json.loads(ran.stdout)
    assert done["status"] == "succeeded", done["error"]
    assert done["steps"] == ["echo a > a.txt", "echo b > b.txt"]
    assert done["prompt"] == "echo a > a.txt\necho b > b.txt"
    assert git_repo.remote_git("rev-list", "--count", f"main..{done['branch']}") == "2"
    empty = telecoder(
        "run", "--repo", str(git_repo.path), "--engine", "shell", "--step", " ", env=env
    )
    assert empty.returncode == 2
    assert "a step is empty" in empty.stderr
    chat = telecoder("run", "--repo", str(git_repo.path), "--mode", "chat", "--step", "x", env=env)
    assert chat.returncode == 2
    assert "steps are for a task" in chat.stderr


STEP_ONE = "write-step-one into one.txt"
STEP_TWO = "write-step-two into two.txt"
SCRIPTS = {
    STEP_ONE: (
        Reply(text="Writing one.", command="echo one > one.txt"),
        Reply(text="Wrote one.txt."),
    ),
    STEP_TWO: (
        Reply(text="Writing two.", command="echo two > two.txt"),
        Reply(text="Wrote two.txt."),
    ),
}


@pytest.mark.usefixtures("agent_tools")
async def test_a_real_agent_takes_the_steps_in_one_conversation(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    case = E2E_BY_ID["claude-code"]
    home = tmp_path / "agent-home"
    with FakeModelServer(scripts=SCRIPTS) as server:
        env = agent_env(home, server.url)
        ran = telecoder(
            "run", "--step", STEP_ONE, "--step", STEP_TWO, "--repo", str(git_repo.path),
            "--engine", case.engine, "--model", case.model, "--json", env=env, timeout=240,
        )  # fmt: skip
        bodies = [json.dumps(r.body) for r in server.model_requests()]
    assert ran.returncode == 0, ran.stderr
    done = json.loads(ran.stdout)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["text"] == "Wrote two.txt."
    head = done["result"]["commit"]
    assert git_repo.remote_git("show", f"{head}:one.txt") == "one"
    assert git_repo.remote_git("show", f"{head}:two.txt") == "two"
    assert git_repo.remote_git("rev-list", "--count", f"main..{head}") == "2"
    # Step 2 resumed the agent's session: its requests carry step 1's conversation.
    assert any(STEP_TWO in b and STEP_ONE in b and "Wrote one.txt." in b for b in bodies)
    [attempt] = await attempts_of(home, done["id"])
    assert attempt.engine_session_id


async def test_the_api_takes_steps(settings: Settings, store: Store, git_repo: GitRepo) -> None:
    from telecoder.server import create_app
    from tests.server import client

    steps = ["echo a > a.txt", "echo b > b.txt"]
    async with client(create_app(settings, store)) as c:
        made = await c.post(
            "/api/sessions", json={"repo": str(git_repo.path), "engine": "shell", "steps": steps}
        )
        neither = await c.post("/api/sessions", json={"repo": str(git_repo.path)})
        blank = await c.post("/api/sessions", json={"repo": str(git_repo.path), "steps": [" "]})
        chat = await c.post(
            "/api/sessions", json={"repo": str(git_repo.path), "steps": ["x"], "mode": "chat"}
        )
    assert made.status_code == 201, made.text
    assert made.json()["steps"] == steps
    assert made.json()["prompt"] == "\n".join(steps)
    assert (await store.sessions.get(made.json()["id"])).steps == tuple(steps)
    assert neither.status_code == 422
    assert [f["field"] for f in neither.json()["fields"]] == ["prompt"]
    assert blank.status_code == 422
    assert "steps.0" in [f["field"] for f in blank.json()["fields"]]
    assert chat.status_code == 422
    assert "steps are for a task" in chat.text
