"""``telecoder orch`` as a leader runs it: the real command as a subprocess (its JSON and exit
codes) on SQLite and PostgreSQL, and a real worker (in this process, the shell engine in the
sandbox) executing what it dispatches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from telecoder.assemble import build_worker
from telecoder.domain import SessionStatus
from telecoder.settings import Settings
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo, git
from tests.integration.test_engine_shell import tuned


def orch(*args: str, env: dict[str, str], code: int = 0) -> Any:
    done = telecoder("orch", *args, env=env)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    if code == 0 and "--json" in args:
        return json.loads(done.stdout)
    return done


async def execute(settings: Settings, store: Store, session_id: str) -> None:
    worker = build_worker(tuned(settings), store)
    claimed = await store.queue.claim(worker.id, only=session_id)
    assert claimed is not None
    async with asyncio.timeout(60):
        await worker.execute(claimed)


async def test_an_orch_run_from_the_command_line(
    settings: Settings, store: Store, db_url: str, git_repo: GitRepo
) -> None:
    env = cli_env(settings.home, TELECODER_DATABASE_URL=db_url, TELECODER_AGENT="lead")
    run = orch("run", "init", "--repo", str(git_repo.path), "--name", "demo", "--json", env=env)
    assert (run["kind"], run["status"], run["name"]) == ("orch", "running", "demo")
    assert run["spec"] == {"leader": "lead", "strict": True, "repo": str(git_repo.path)}
    rid = run["id"]
    a = orch(
        "task", "add", rid, "A", "--prompt", "echo a > a.txt", "--engine", "shell",
        "--acceptance", "a.txt exists", "--json", env=env,
    )  # fmt: skip
    assert (a["key"], a["status"], a["acceptance"], a["thread"]) == (
        "A",
        "ready",
        "a.txt exists",
        f"orch:{rid}:A",
    )
    orch("task", "add", rid, "B", "--prompt", "echo b > b.txt", "--engine", "shell", env=env)
    b = orch("dep", "add", rid, "B", "--on", "A", "--json", env=env)
    assert (b["status"], b["depends_on"]) == ("pending", ["A"])
    cycle = orch("dep", "add", rid, "A", "--on", "B", env=env, code=2)
    assert "cycle" in cycle.stderr
    assert [t["key"] for t in orch("ready", rid, "--json", env=env)] == ["A"]
    waits = orch("dispatch", rid, "B", env=env, code=4)
    assert "waits for A" in waits.stderr
    orch("status", "run_nothere", env=env, code=3)
    orch("dispatch", rid, "Z", env=env, code=3)
    orch("task", "add", rid, "X", "--prompt", "x", "--mode", "poem", env=env, code=2)
    orch("answer", rid, "A", "--body", "no one asked", env=env, code=4)
    timed_out = orch("wait", rid, "--timeout", "0.3", env=env, code=10)
    assert "no task event" in timed_out.stderr

    [dispatched] = orch("dispatch", rid, "--json", env=env)
    [attempt] = dispatched["attempts"]
    session_id = dispatched["session_id"]
    assert attempt["session_id"] == session_id
    assert attempt["worktree"] == str(settings.worktrees / f"{session_id}-1")
    assert attempt["branch"] == f"telecoder/{session_id}"
    assert attempt["base_ref"] == git_repo.git("rev-parse", "HEAD")
    assert dispatched["warnings"] == []
    [message] = await store.inbox.list(thread=f"orch:{rid}:A")
    assert message.id == attempt["message_id"]
    assert f"worktree: {attempt['worktree']}" in message.body
    assert f"branch: {attempt['branch']}" in message.body
    session = await store.sessions.get(session_id)
    assert (session.run_id, session.task_key, session.status) == (rid, "A", SessionStatus.QUEUED)

    await execute(settings, store, session_id)
    assert (
        git("-c", "safe.directory=*", "-C", attempt["worktree"], "branch", "--show-current")
        == (attempt["branch"])
    )
    waited = orch("wait", rid, "--after", "0", "--timeout", "5", "--json", env=env)
    assert waited["cursor"] == waited["events"][-1]["id"]
    # wait reconciles while it waits: A succeeded, so B is ready.
    assert [(e["task"], e["kind"], e["data"].get("status")) for e in waited["events"]][-2:] == [
        ("A", "status", "succeeded"),
        ("B", "ready", "ready"),
    ]
    assert orch("reconcile", rid, "--json", env=env) == []
    assert [t["key"] for t in orch("ready", rid, "--json", env=env)] == ["B"]
    status = orch("status", rid, "--json", env=env)
    assert {t["key"]: t["status"] for t in status["tasks"]} == {"A": "succeeded", "B": "ready"}
    assert status["run"]["status"] == "running"
    assert status["cursor"] == waited["cursor"]
    shown = orch("status", rid, env=env)
    assert "succeeded" in shown.stdout
    assert attempt["branch"] in shown.stdout

    # A dirty checkout: refused in a strict run (naming the files), unless a base is given.
    (git_repo.path / "README.md").write_text("edited\n")
    refused = orch("dispatch", rid, "B", env=env, code=2)
    assert "uncommitted changes" in refused.stderr
    assert "README.md" in refused.stderr
    [b_sent] = orch("dispatch", rid, "B", "--base", "main", "--json", env=env)
    assert b_sent["attempts"][-1]["base_ref"] == "main"
    await execute(settings, store, b_sent["session_id"])
    orch("reconcile", rid, env=env)
    assert orch("status", rid, "--json", env=env)["run"]["status"] == "succeeded"
    cleaned = orch("cleanup", rid, "--json", env=env)
    assert sorted(r["task"] for r in cleaned["removed"]) == ["A", "B"]
    assert not Path(attempt["worktree"]).exists()


async def test_blocked_and_answer_from_the_command_line(
    settings: Settings, store: Store, db_url: str, git_repo: GitRepo
) -> None:
    env = cli_env(settings.home, TELECODER_DATABASE_URL=db_url)
    rid = orch("run", "init", "--repo", str(git_repo.path), "--json", env=env)["id"]
    ask = 'echo draft > draft.txt; echo "QUESTION: which name?"'
    orch("task", "add", rid, "Q", "--prompt", ask, "--engine", "shell", env=env)
    [sent] = orch("dispatch", rid, "Q", "--json", env=env)
    assert sent["attempts"][0]["assignee"] == f"session:{sent['session_id']}"
    await execute(settings, store, sent["session_id"])
    assert orch("blocked", rid, "--json", env=env)[0]["question"] == "which name?"
    [event] = orch("reconcile", rid, "--json", env=env)
    assert (event["task"], event["data"]["status"]) == ("Q", "blocked")
    said = orch("answer", rid, "Q", "--body", "git mv draft.txt final.txt", "--json", env=env)
    assert said["resumed"] == sent["session_id"]
    assert orch("blocked", rid, "--json", env=env) == []
    await execute(settings, store, sent["session_id"])
    orch("reconcile", rid, env=env)
    [task] = orch("status", rid, "--json", env=env)["tasks"]
    assert task["status"] == "succeeded"
    # The leader cancels nothing that ended: a conflict.
    orch("cancel", rid, "Q", env=env, code=4)
