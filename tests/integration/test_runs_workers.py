"""Runs on real ``telecoder worker`` processes (shell engine, SQLite and PostgreSQL), operated
with the real ``telecoder runs`` command: the DAG a → (b, c) → d with b failing skips d and
runs c, and ``runs retry-failed`` reruns b, then d; ``runs cancel`` stops the run's running
sessions (their processes end) and cancels what waits."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder.domain import Dependency, NewRun, RunKind, RunStatus
from telecoder.intake import Request
from telecoder.server.state import default_intake
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from tests.cli import telecoder
from tests.conftest import GitRepo
from tests.processes import with_marker
from tests.procs import WorkerProcs, fast_env, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


@pytest.fixture
async def shared(db_url: str) -> AsyncIterator[Store]:
    store = await open_store(db_url, lease_seconds=2)
    yield store
    await store.close()


async def plan(
    store: Store,
    home: Path,
    db_url: str,
    repo: GitRepo,
    tasks: dict[str, str],
    edges: list[tuple[str, str]],
) -> tuple[str, dict[str, str]]:
    """A run of shell sessions (each through intake, as the API takes them); ``edges``:
    (task, what it waits for)."""
    intake = default_intake(Settings(home=home, database_url=db_url))
    new = []
    for key, command in tasks.items():
        accepted = await intake(Request(repo=str(repo.path), prompt=command, engine="shell"))
        new.append(dataclasses.replace(accepted.session, task_key=key, max_attempts=1))
    ids = {s.task_key or "": s.id for s in new}
    deps = [Dependency(session_id=ids[x], depends_on=ids[y]) for x, y in edges]
    run, _ = await store.runs.create(NewRun(kind=RunKind.PLAN, name="plan"), new, deps)
    return run.id, ids


async def ended(store: Store, run_id: str, seconds: float = 60) -> None:
    for _ in range(int(seconds * 10)):
        if (await store.runs.get(run_id)).status != RunStatus.RUNNING:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} still runs: {await by_key(store, run_id)}")


async def by_key(store: Store, run_id: str) -> dict[str, str]:
    return {s.task_key or "": s.status.value for s in await store.runs.sessions(run_id)}


def runs_cli(env: dict[str, str], *args: str) -> Any:
    done = telecoder("runs", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


async def test_a_dag_with_a_failure_then_retry_failed(
    shared: Store, db_url: str, home: Path, git_repo: GitRepo, worker_procs: WorkerProcs
) -> None:
    env = fast_env(home, db_url)
    tasks = {
        "a": "echo a > a.txt",
        "b": "test -f go.txt && echo b > b.txt",  # fails until main has go.txt
        "c": "echo c > c.txt",
        "d": "echo d > d.txt",
    }
    edges = [("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")]
    run_id, ids = await plan(shared, home, db_url, git_repo, tasks, edges)
    worker_procs.start(env, "w1")
    await ended(shared, run_id)
    first = await by_key(shared, run_id)
    assert (first["a"], first["c"], first["d"]) == ("succeeded", "succeeded", "skipped")
    assert first["b"] in ("failed", "dead")
    shown = await asyncio.to_thread(runs_cli, env, "show", run_id, "--json")
    assert shown["status"] == "failed"
    assert shown["totals"]["sessions"] == 4
    assert shown["totals"]["statuses"] == {"succeeded": 2, first["b"]: 1, "skipped": 1}
    table = await asyncio.to_thread(runs_cli, env, "show", run_id)
    assert ("a → b" in table, "c → d" in table, "skipped" in table) == (True, True, True)

    (git_repo.path / "go.txt").write_text("now b passes\n")  # the sandbox sees the repo only
    git_repo.git("add", "go.txt")
    git_repo.git("commit", "-q", "-m", "go")
    git_repo.git("push", "-q", "origin", "main")
    again = await asyncio.to_thread(runs_cli, env, "retry-failed", run_id, "--json")
    assert again["status"] == "running"
    assert {s["task_key"]: s["status"] for s in again["sessions"]}["d"] == "waiting"
    await ended(shared, run_id)
    assert await by_key(shared, run_id) == dict.fromkeys("abcd", "succeeded")
    b, d = await shared.sessions.get(ids["b"]), await shared.sessions.get(ids["d"])
    assert (b.attempt, d.attempt) == (2, 1)
    assert b.finished_at is not None
    assert d.started_at is not None
    assert d.started_at >= b.finished_at  # b reran, then d
    assert git_repo.remote_git("show", f"{d.branch}:d.txt") == "d"
    final = await asyncio.to_thread(runs_cli, env, "show", run_id, "--json")
    assert final["status"] == "succeeded"
    each = [await shared.sessions.get(i) for i in ids.values()]
    assert final["totals"]["statuses"] == {"succeeded": 4}
    assert final["totals"]["cost_usd"] == pytest.approx(sum(s.cost_usd for s in each))
    assert final["totals"]["input_tokens"] == sum(s.input_tokens for s in each)
    listed = await asyncio.to_thread(runs_cli, env, "list", "--json")
    assert [(r["id"], r["status"]) for r in listed] == [(run_id, "succeeded")]


async def test_cancel_stops_the_running_sessions_of_a_run(
    shared: Store, db_url: str, home: Path, git_repo: GitRepo, worker_procs: WorkerProcs
) -> None:
    env = fast_env(home, db_url, TELECODER_WORKER_CONCURRENCY="2")
    nap = f"sleep 4{secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    tasks = {"x": nap, "y": nap, "z": "echo z > z.txt"}
    run_id, _ = await plan(shared, home, db_url, git_repo, tasks, [("z", "x")])
    worker_procs.start(env, "w1")
    for _ in range(300):
        found = await by_key(shared, run_id)
        if found["x"] == found["y"] == "running" and len(with_marker(nap)) >= 2:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the sleeps did not start: {found}")
    done = await asyncio.to_thread(telecoder, "runs", "cancel", run_id, env=env)
    assert done.returncode == 0, done.stderr
    await ended(shared, run_id, seconds=30)
    assert (await shared.runs.get(run_id)).status == RunStatus.CANCELLED
    assert await by_key(shared, run_id) == dict.fromkeys("xyz", "cancelled")
    for _ in range(100):
        if not with_marker(nap):
            break
        await asyncio.sleep(0.1)
    assert with_marker(nap) == []  # the agents' processes are gone
    again = await asyncio.to_thread(telecoder, "runs", "cancel", run_id, env=env)
    assert again.returncode == 4  # nothing left to cancel
    assert "already cancelled" in again.stderr
    missing = await asyncio.to_thread(telecoder, "runs", "show", "run_nope", env=env)
    assert missing.returncode == 3
