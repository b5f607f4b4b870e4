"""Chaos: ~200 `shell` sessions through 3 `telecoder worker` processes that are SIGKILLed (with
their git and agent children) and restarted at random moments, on SQLite (one host: the workers
share a home) and on PostgreSQL (three "hosts": a home each, one database).

Half the sessions push to a plain bare remote, half go through the fake GitHub (git over HTTP
and the REST API). Afterwards: every session is terminal and none is lost; each branch holds
exactly one TeleCoder commit; no pull request was opened twice; every session's events are
numbered without gaps or duplicates and no attempt wrote after a later one began; an attempt's
pushed sha is only ever recorded by the attempt that completed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder.domain import (
    AttemptStatus,
    NewSession,
    SessionStatus,
    new_session_id,
)
from telecoder.store import open_store
from tests.cli import TELECODER, cli_env
from tests.conftest import GitRepo, make_repo
from tests.fakes.github import TOKEN, FakeGitHub

pytestmark = pytest.mark.long

SESSIONS = 200
WORKERS = 3
CHAOS_SECONDS = 40.0  # kill and restart workers for this long
# After the chaos the sessions must keep ending: a minute with none ending is a stall (a loaded
# machine is slow, never stuck), and all must be done by the deadline.
STALL_SECONDS = 60.0
DEADLINE_SECONDS = 360.0
SEED = int(os.environ.get("TELECODER_CHAOS_SEED", "7080"))


class Fleet:
    """Three worker processes, killed and restarted under the same names."""

    def __init__(self, homes: list[Path], env: dict[str, str]) -> None:
        self.homes = homes
        self.env = env
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * WORKERS
        self.kills = 0

    def start(self, i: int) -> None:
        home = self.homes[i]
        with (home / f"worker-{i}.log").open("ab") as log:
            self.procs[i] = subprocess.Popen(
                [TELECODER, "worker"],
                env={**self.env, "TELECODER_HOME": str(home), "TELECODER_WORKER_ID": f"w{i}"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker, its git commands, its agents
            self.kills += 1
        if proc is not None:
            proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(i)

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-3000:]}"
            for home in dict.fromkeys(self.homes)
            for log in sorted(home.glob("worker-*.log"))
        )


@pytest.fixture
def fleet_env(db_url: str, tmp_path: Path, fake_github: FakeGitHub) -> Iterator[dict[str, Any]]:
    local = make_repo(tmp_path, "local")
    hub = make_repo(tmp_path, "hub")
    fake_github.add_repo("acme", "hub", git_dir=hub.remote)
    hub.git("remote", "set-url", "origin", fake_github.git_url("acme", "hub"))
    sqlite = db_url.startswith("sqlite")
    base = tmp_path / "home"
    homes = [base] * WORKERS if sqlite else [tmp_path / f"host{i}" for i in range(WORKERS)]
    for home in homes:
        home.mkdir(exist_ok=True)
    env = cli_env(
        base,
        TELECODER_DATABASE_URL=db_url,
        TELECODER_LEASE_SECONDS="2",
        TELECODER_HEARTBEAT_SECONDS="0.4",
        TELECODER_POLL_SECONDS="0.25",
        TELECODER_WORKER_CONCURRENCY="4",
        TELECODER_KILL_GRACE_SECONDS="1",
        # A session crashed five times would wait 2·2⁴ ≈ 32 s for its sixth try at the default;
        # the retries (what is checked) are the same, the run's tail much shorter.
        TELECODER_RETRY_BACKOFF_SECONDS="0.25",
        GITHUB_TOKEN=TOKEN,
        TELECODER_GITHUB_API_URL=fake_github.url,
    )
    fleet = Fleet(homes, env)
    yield {"local": local, "hub": hub, "fleet": fleet, "db_url": db_url, "fake": fake_github}
    fleet.stop()


async def enqueue(db_url: str, local: GitRepo, hub: GitRepo) -> list[str]:
    store = await open_store(db_url)
    ids = []
    try:
        for i in range(SESSIONS):
            repo = local if i % 2 else hub
            session_id = new_session_id()
            new = NewSession(
                id=session_id,
                repo=str(repo.path),
                prompt=f'sleep 0.$((RANDOM % 5)); echo "task {i}" > task-{i}.txt',
                engine="shell",
                max_attempts=25,  # crashes are retried; what matters is that they end well
            )
            ids.append((await store.sessions.create(dataclasses.replace(new))).id)
    finally:
        await store.close()
    return ids


async def collect(db_url: str, ids: list[str]) -> dict[str, Any]:
    store = await open_store(db_url)
    try:
        found = {}
        for session_id in ids:
            session = await store.sessions.get(session_id)
            attempts = await store.sessions.attempts(session_id)
            events = await store.events.list(session_id, limit=100_000)
            found[session_id] = (session, attempts, events)
        return found
    finally:
        await store.close()


def terminal_count(db_url: str, ids: list[str]) -> int:
    async def count() -> int:
        store = await open_store(db_url, migrate=False)
        try:
            done = 0
            for status in SessionStatus:
                if status.terminal:
                    page = await store.sessions.list(status=status, limit=SESSIONS + 1)
                    done += len(page.sessions)
            return done
        finally:
            await store.close()

    return asyncio.run(count())


def stuck(db_url: str, ids: list[str], fleet: Fleet) -> str:
    """Why sessions are not done: enough to debug a failed run from its output."""
    now = time.time()
    lines = []
    for sid, (s, tried, _) in asyncio.run(collect(db_url, ids)).items():
        if not s.status.terminal:
            last = tried[-1] if tried else None
            lines.append(
                f"{sid} {s.status.value} attempt {s.attempt} worker {s.worker_id} "
                f"due in {s.available_at - now:.1f}s lease {((s.lease_until or now) - now):.1f}s "
                f"last: {last and (last.status.value, last.failure_kind, last.error)}"
            )
    return f"{len(lines)} sessions not terminal:\n" + "\n".join(lines) + "\n" + fleet.logs()


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_chaos(fleet_env: dict[str, Any]):
    fleet: Fleet = fleet_env["fleet"]
    db_url: str = fleet_env["db_url"]
    local: GitRepo = fleet_env["local"]
    hub: GitRepo = fleet_env["hub"]
    fake: FakeGitHub = fleet_env["fake"]
    rng = random.Random(SEED)
    ids = asyncio.run(enqueue(db_url, local, hub))
    started = time.monotonic()
    for i in range(WORKERS):
        fleet.start(i)

    # Kill a random worker every 0.5-2.5 s and bring it back 0-1 s later.
    while time.monotonic() - started < CHAOS_SECONDS:
        time.sleep(rng.uniform(0.5, 2.5))
        victim = rng.randrange(WORKERS)
        fleet.kill(victim)
        time.sleep(rng.uniform(0.0, 1.0))
        fleet.start(victim)
        if terminal_count(db_url, ids) == SESSIONS:
            break
    chaos_ended = time.monotonic()
    done, progressed = terminal_count(db_url, ids), time.monotonic()
    while done < SESSIONS:
        now = time.monotonic()
        assert now - progressed < STALL_SECONDS, stuck(db_url, ids, fleet)
        assert now - started < DEADLINE_SECONDS, stuck(db_url, ids, fleet)
        time.sleep(0.5)
        count = terminal_count(db_url, ids)
        if count > done:
            done, progressed = count, time.monotonic()
    elapsed = time.monotonic() - started
    fleet.stop()

    found = asyncio.run(collect(db_url, ids))
    statuses = Counter(s.status.value for s, _, _ in found.values())
    attempts = [a for _, tried, _ in found.values() for a in tried]
    kinds = Counter(a.failure_kind.value for a in attempts if a.failure_kind is not None)
    crashed = sum(a.interrupted == "crashed" for a in attempts)
    stopped = sum(a.interrupted == "stopped" for a in attempts)
    print(  # noqa: T201 (the run's figures; shown with -s)
        f"\nchaos: {SESSIONS} sessions, {fleet.kills} SIGKILLs in {chaos_ended - started:.0f}s, "
        f"all terminal after {elapsed:.0f}s: {dict(statuses)}; {len(attempts)} attempts, "
        f"{crashed} crashed, {stopped} stopped; failures {dict(kinds)}"
    )
    assert fleet.kills >= 10
    assert crashed >= 5, "the chaos interrupted (almost) nothing"

    # Every session terminal, none lost; each ended well (crashes are retried).
    assert len(found) == SESSIONS
    failed = {
        sid: (s.status, s.error)
        for sid, (s, _, _) in found.items()
        if s.status.value != "succeeded"
    }
    assert not failed, f"{failed}\n{fleet.logs()}"

    pulls = Counter(p.head for p in fake.pulls("acme", "hub"))
    for session_id, (session, tried, events) in found.items():
        repo = local if session.repo == str(local.path) else hub
        result = session.result
        assert result is not None
        assert result.commit is not None
        # Exactly one TeleCoder commit on the session's branch.
        commits = repo.remote_git("rev-list", f"main..{session.branch}").splitlines()
        assert commits == [result.commit], session_id
        # Events: 1..n without gaps or duplicates; an attempt never writes after a later one.
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), session_id
        numbered = [e.attempt for e in events if e.attempt is not None]
        assert numbered == sorted(numbered), f"{session_id}: a stale attempt wrote late"
        for attempt in tried:
            own = [e for e in events if e.attempt == attempt.number]
            assert own[0].kind.value == "status"
            assert own[0].data == {"status": "running", "attempt": attempt.number,
                                   "worker": attempt.worker_id}  # fmt: skip
        # One attempt completed it; only that one recorded a pushed sha.
        done = [a for a in tried if a.status == AttemptStatus.SUCCEEDED]
        assert len(done) == 1, session_id
        assert done[0].pushed_sha == result.commit
        assert all(a.pushed_sha is None for a in tried if a is not done[0])
        assert all(a.status != AttemptStatus.RUNNING for a in tried)
        if repo is hub:
            assert pulls[session.branch] == 1, f"{session_id}: {pulls[session.branch]} PRs"
            assert result.pr_number is not None
    # No branch other than the sessions' (and no stray commits on any branch).
    for repo, count in ((local, SESSIONS // 2), (hub, SESSIONS - SESSIONS // 2)):
        branches = repo.remote_git("for-each-ref", "--format=%(refname)", "refs/heads/telecoder/")
        assert len(branches.splitlines()) == count
        assert repo.remote_git("rev-list", "--count", "main") == "1"
    assert sum(pulls.values()) == SESSIONS - SESSIONS // 2
    if db_url.startswith("sqlite"):
        path = db_url.removeprefix("sqlite:///")
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
