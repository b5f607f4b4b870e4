"""Wake-ups: a queued session is claimed and a cancel noticed at once, not at the next poll —
across processes through PostgreSQL LISTEN/NOTIFY (which survives its connection being killed),
within one process on SQLite too. And a worker cut off from PostgreSQL stops its agent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from telecoder.assemble import build_worker
from telecoder.domain import NewSession, SessionStatus
from telecoder.settings import Settings
from telecoder.store import open_store
from tests.cli import telecoder, wait_for
from tests.conftest import PG_ADMIN_URL, GitRepo
from tests.processes import with_marker
from tests.procs import WorkerProcs, fast_env, show, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def admin(sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def listener_pids(name: str) -> list[int]:
    rows = admin("SELECT pid FROM pg_stat_activity WHERE application_name = %s", name)
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]


def sleepy_env(home: Path, pg_url: str) -> dict[str, str]:
    """Polls and heartbeats so rare that only a notice explains a prompt reaction."""
    return {
        **fast_env(home, pg_url),
        "TELECODER_POLL_SECONDS": "60",
        "TELECODER_HEARTBEAT_SECONDS": "20",
        "TELECODER_LEASE_SECONDS": "60",
    }


def queue(env: dict[str, str], repo: GitRepo, prompt: str) -> str:
    done = telecoder("run", prompt, "--repo", str(repo.path), "--detach", env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.postgres
def test_notify_wakes_workers_and_survives_a_killed_connection(
    git_repo: GitRepo, home: Path, pg_url: str, worker_procs: WorkerProcs
):
    env = sleepy_env(home, pg_url)
    worker = worker_procs.start(env, "worker-a")
    name = "telecoder-listen:worker-a"
    first_pid = wait_for(lambda: listener_pids(name), what="the worker to LISTEN")[0]
    time.sleep(0.5)  # past the first poll

    sid = queue(env, git_repo, "echo one > one.txt")
    queued = time.monotonic()
    wait_for(lambda: show(sid, env)["status"] == "succeeded", timeout=20, what="the first task")
    assert time.monotonic() - queued < 10

    # Kill the listening connection: the worker reconnects and listens again.
    assert admin("SELECT pg_terminate_backend(%s)", first_pid) == [(True,)]
    pids = wait_for(
        lambda: [p for p in listener_pids(name) if p != first_pid], timeout=15, what="re-LISTEN"
    )
    assert pids
    time.sleep(0.5)  # the reconnection's own look for work is over
    sid = queue(env, git_repo, "echo two > two.txt")
    queued = time.monotonic()
    wait_for(lambda: show(sid, env)["status"] == "succeeded", timeout=20, what="the second task")
    assert time.monotonic() - queued < 10
    assert worker.poll() is None


@pytest.mark.postgres
def test_a_cancel_is_noticed_at_once_through_notify(
    git_repo: GitRepo, home: Path, pg_url: str, worker_procs: WorkerProcs
):
    env = sleepy_env(home, pg_url)
    worker_procs.start(env, "worker-a")
    marker = f"60.{time.time_ns() % 10**9:09d}"
    sid = queue(env, git_repo, f"sleep {marker}")
    wait_for(lambda: with_marker(marker), what="the agent to start")
    cancelled = time.monotonic()
    done = telecoder("cancel", sid, env=env)
    assert done.returncode == 0, done.stderr
    final = wait_for(lambda: (s := show(sid, env))["finished_at"] and s, timeout=15)
    assert final["status"] == "cancelled"
    assert time.monotonic() - cancelled < 8  # the heartbeat is 20 s away
    assert not with_marker(marker)


@pytest.mark.postgres
def test_a_worker_cut_off_from_the_database_stops_its_agent(
    git_repo: GitRepo, home: Path, pg_url: str, worker_procs: WorkerProcs
):
    env = fast_env(home, pg_url)
    database = pg_url.rsplit("/", 1)[1]
    marker = f"8.{time.time_ns() % 10**9:09d}"
    sid = queue(env, git_repo, f"sleep {marker}; echo done > r.txt")
    worker_procs.start(env, "worker-a")
    wait_for(lambda: with_marker(marker), what="the agent to start")
    try:
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            database,
        )
        cut = time.monotonic()
        # The lease is 2 s: unrenewed past it, the worker must assume the session is gone.
        wait_for(lambda: not with_marker(marker), timeout=8, what="the agent to be stopped")
        assert time.monotonic() - cut < 6
    finally:
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    final = wait_for(lambda: (s := show(sid, env))["finished_at"] and s, timeout=40)
    assert final["status"] == "succeeded"
    assert final["attempts"][0]["interrupted"] == "crashed"
    assert len(git_repo.remote_git("rev-list", f"main..{final['branch']}").splitlines()) == 1


async def test_in_one_process_a_new_session_wakes_the_worker_at_once(
    settings: Settings, db_url: str, git_repo: GitRepo
):
    settings = settings.model_copy(update={"poll_seconds": 60.0})
    store = await open_store(db_url, lease_seconds=settings.lease_seconds)
    worker = build_worker(settings, store)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.5)  # the worker's first look found nothing
        new = NewSession(repo=str(git_repo.path), prompt="echo hi > hi.txt", engine="shell")
        await store.sessions.create(new)
        started = time.monotonic()
        while (await store.sessions.get(new.id)).status != SessionStatus.SUCCEEDED:
            assert time.monotonic() - started < 10, "the worker waited for its next poll"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
        await store.close()
