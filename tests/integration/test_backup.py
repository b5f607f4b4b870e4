"""`telecoder db backup` / `db restore`: consistent copies while a worker writes, restores that
are refused while workers run, checked files, migrated old backups (PostgreSQL:
test_pgbackup.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from telecoder.store.db import Database
from telecoder.store.migrations import HEAD, upgrade
from tests.cli import cli_env, telecoder, wait_for
from tests.conftest import GitRepo
from tests.procs import WorkerProcs, fast_env, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def consistent(path: Path) -> tuple[int, int]:
    """Check a backup: intact, and every session's events exactly its ``last_seq``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        rows = conn.execute(
            "SELECT s.id, s.last_seq, count(e.id), coalesce(max(e.seq), 0), "
            "coalesce(min(e.seq), 1) FROM sessions s LEFT JOIN events e ON e.session_id = s.id "
            "GROUP BY s.id, s.last_seq"
        ).fetchall()
        for sid, last, count, top, bottom in rows:
            assert (count, top, bottom) == (last, last, 1), f"session {sid} is torn"
        running = conn.execute(
            "SELECT count(*) FROM sessions s JOIN attempts a ON a.session_id = s.id "
            "AND a.number = s.attempt WHERE s.status = 'running' AND a.status <> 'running'"
        ).fetchone()
        assert running == (0,)
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return len(rows), int(events)
    finally:
        conn.close()


def session_ids(env: dict[str, str]) -> set[str]:
    done = telecoder("list", "--json", "--limit", "1000", env=env)
    assert done.returncode == 0, done.stderr
    return {s["id"] for s in json.loads(done.stdout)["sessions"]}


def test_backups_taken_while_a_worker_writes_are_consistent(
    git_repo: GitRepo, home: Path, tmp_path: Path, worker_procs: WorkerProcs
):
    env = fast_env(home, TELECODER_WORKER_CONCURRENCY="3")
    # Sessions that outlast the backups however slowly the machine runs them (the worker, and
    # they with it, is killed at the end).
    chatty = "for i in $(seq 6000); do echo line $i; sleep 0.01; done; echo x > $RANDOM.txt"
    for _ in range(6):
        telecoder("run", chatty, "--repo", str(git_repo.path), "--detach", env=env)
    worker_procs.start(env, "worker-a")
    wait_for(
        lambda: any(
            json.loads(telecoder("list", "--json", "--status", "running", env=env).stdout)[
                "sessions"
            ]
        ),
        what="sessions running",
    )
    copies = []
    for i in range(4):
        target = tmp_path / f"backup-{i}.db"
        done = telecoder("db", "backup", str(target), env=env)
        assert done.returncode == 0, done.stderr
        assert f"to {target}" in done.stdout
        copies.append(consistent(target))
    assert len({events for _, events in copies}) > 1, "the worker was not writing meanwhile"
    # A second backup never overwrites the first.
    again = telecoder("db", "backup", str(tmp_path / "backup-0.db"), env=env)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_restore_puts_a_backup_back_and_is_refused_while_workers_run(
    git_repo: GitRepo, home: Path, tmp_path: Path, worker_procs: WorkerProcs
):
    env = fast_env(home)
    first = telecoder("run", "echo 1 > one.txt", "--repo", str(git_repo.path), env=env)
    assert first.returncode == 0, first.stderr
    before = session_ids(env)
    backup = tmp_path / "before.db"
    assert telecoder("db", "backup", str(backup), env=env).returncode == 0
    later = telecoder("run", "echo 2 > two.txt", "--repo", str(git_repo.path), env=env)
    assert later.returncode == 0, later.stderr
    assert len(session_ids(env)) == 2

    worker = worker_procs.start(env, "worker-a")
    wait_for(lambda: "worker-a" in telecoder("workers", "--live", env=env).stdout)
    refused = telecoder("db", "restore", str(backup), env=env)
    assert refused.returncode == 4
    assert "workers are running: worker-a" in refused.stderr
    assert len(session_ids(env)) == 2
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0

    done = telecoder("db", "restore", str(backup), env=env)
    assert done.returncode == 0, done.stderr
    assert session_ids(env) == before
    # The restored store works: a new task runs on it.
    third = telecoder("run", "echo 3 > three.txt", "--repo", str(git_repo.path), env=env)
    assert third.returncode == 0, third.stderr
    assert len(session_ids(env)) == 2


def test_restore_with_force_while_a_worker_runs(
    home: Path, tmp_path: Path, worker_procs: WorkerProcs
):
    env = fast_env(home)
    backup = tmp_path / "empty.db"
    assert telecoder("db", "backup", str(backup), env=env).returncode == 0
    worker_procs.start(env, "worker-a")
    wait_for(lambda: "worker-a" in telecoder("workers", "--live", env=env).stdout)
    done = telecoder("db", "restore", str(backup), "--force", env=env)
    assert done.returncode == 0, done.stderr


def test_restore_checks_the_file(home: Path, tmp_path: Path):
    env = cli_env(home)
    missing = telecoder("db", "restore", str(tmp_path / "nope.db"), env=env)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all " * 100)
    bad = telecoder("db", "restore", str(junk), env=env)
    assert bad.returncode == 2
    assert "not a TeleCoder database" in bad.stderr
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    wrong = telecoder("db", "restore", str(other), env=env)
    assert wrong.returncode == 2


def test_an_old_backup_is_migrated_on_restore(home: Path, tmp_path: Path):
    old = tmp_path / "old.db"

    async def make_old() -> None:
        db = Database(f"sqlite:///{old}")
        await upgrade(db, "0001")  # before the workers table and sessions.engine_source
        await db.dispose()

    asyncio.run(make_old())
    sid = "0" * 26
    # A session as a release of that era wrote it: only the columns schema 0001 has.
    conn = sqlite3.connect(old)
    with conn:
        conn.execute(
            "INSERT INTO sessions (id, repo, prompt, engine, branch, status, available_at, "
            "created_at, updated_at) "
            "VALUES (?, '/r', 'p', 'shell', 'telecoder/x', 'queued', 0, 0, 0)",
            (sid,),
        )
    conn.close()
    env = cli_env(home)
    done = telecoder("db", "restore", str(old), env=env)
    assert done.returncode == 0, done.stderr
    assert session_ids(env) == {sid}
    assert telecoder("workers", "--json", env=env).stdout.strip() == "[]"
    assert f"revision {HEAD}" in telecoder("db", "upgrade", env=env).stdout
