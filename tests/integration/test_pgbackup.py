"""Backups on PostgreSQL (`pg_dump` / `pg_restore` driven by `telecoder db backup|restore`),
timestamped backups with retention (`--dir DIR --keep N`), and scheduled backups
(`TELECODER_BACKUP_SCHEDULE`) — one per slot however many servers run, on either database."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

import psycopg
import pytest

from telecoder import backups
from telecoder.domain import NewSession
from telecoder.errors import BadInput
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from telecoder.store.pgbackup import pg_env
from tests.cli import cli_env, telecoder, wait_for
from tests.e2e.test_serve import free_port, serve_process
from tests.integration.test_backup import session_ids


async def add_sessions(url: str, n: int) -> set[str]:
    store = await open_store(url)
    try:
        created = [
            await store.sessions.create(NewSession(repo="/r", prompt=f"task {i}", engine="shell"))
            for i in range(n)
        ]
    finally:
        await store.close()
    return {s.id for s in created}


def pg(url: str, *statements: str) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            if cur.description is not None:
                rows = cur.fetchall()
    return rows


@pytest.mark.postgres
def test_backup_then_damage_then_restore_brings_the_sessions_back(
    home: Path, tmp_path: Path, pg_url: str
):
    ids = asyncio.run(add_sessions(pg_url, 3))
    env = cli_env(home, TELECODER_DATABASE_URL=pg_url)
    dump = tmp_path / "telecoder.dump"
    done = telecoder("db", "backup", str(dump), env=env)
    assert done.returncode == 0, done.stderr
    assert "backed up 3 sessions (3 events" in done.stdout
    assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.partial"))

    # After the backup: one more session, the others gone, a table dropped.
    later = asyncio.run(add_sessions(pg_url, 1))
    kept_id = next(iter(later))
    pg(pg_url, f"DELETE FROM sessions WHERE id <> '{kept_id}'", "DROP TABLE events")

    done = telecoder("db", "restore", str(dump), env=env)
    assert done.returncode == 0, done.stderr
    assert "restored 3 sessions (3 events)" in done.stdout
    assert session_ids(env) == ids
    assert pg(pg_url, "SELECT count(*) FROM events") == [(3,)]
    again = telecoder("db", "backup", str(dump), env=env)
    assert again.returncode == 2  # the path exists: never overwritten
    assert "already exists" in again.stderr


@pytest.mark.postgres
def test_restore_refuses_a_file_that_is_not_a_dump(home: Path, tmp_path: Path, pg_url: str):
    ids = asyncio.run(add_sessions(pg_url, 1))
    env = cli_env(home, TELECODER_DATABASE_URL=pg_url)
    junk = tmp_path / "junk.dump"
    junk.write_text("not a dump\n")
    done = telecoder("db", "restore", str(junk), env=env)
    assert done.returncode == 2, done.stderr
    assert "not a pg_dump custom-format file" in done.stderr
    assert session_ids(env) == ids


@pytest.mark.postgres
def test_dir_and_keep_name_by_time_and_keep_exactly_three(home: Path, tmp_path: Path, pg_url: str):
    asyncio.run(add_sessions(pg_url, 2))
    env = cli_env(home, TELECODER_DATABASE_URL=pg_url)
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a backup: never deleted\n")
    made = []
    for _ in range(5):
        done = telecoder("db", "backup", "--dir", str(folder), "--keep", "3", env=env)
        assert done.returncode == 0, done.stderr
        made.append(re.search(r"to (\S+)\n", done.stdout).group(1))  # type: ignore[union-attr]
    names = sorted(p.name for p in folder.iterdir())
    assert len([n for n in names if n.endswith(".dump")]) == 3
    assert "notes.txt" in names
    assert {Path(p).name for p in made[-3:]} == {n for n in names if n.endswith(".dump")}
    assert all(re.fullmatch(r"telecoder-\d{8}T\d{6}Z(-\d+)?\.dump", Path(p).name) for p in made)


@pytest.mark.postgres
def test_pg_dump_missing_or_older_than_the_server_is_said_clearly(
    home: Path, tmp_path: Path, pg_url: str
):
    env = cli_env(home, TELECODER_DATABASE_URL=pg_url, PATH=str(tmp_path / "nothing"))
    done = telecoder("db", "backup", str(tmp_path / "x.dump"), env=env)
    assert done.returncode == 8, done.stderr
    assert "pg_dump is not installed" in done.stderr
    assert "postgresql-client-" in done.stderr

    old = tmp_path / "old-bin"
    old.mkdir()
    script = old / "pg_dump"
    script.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    script.chmod(0o755)
    env["PATH"] = str(old)
    done = telecoder("db", "backup", str(tmp_path / "x.dump"), env=env)
    assert done.returncode == 8, done.stderr
    assert "pg_dump is version 9, older than the server (PostgreSQL" in done.stderr
    assert not (tmp_path / "x.dump").exists()


def test_the_password_goes_to_pgpassword_never_argv(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PGPASSWORD", "from-the-parent")
    env = pg_env("postgresql://tc:s3cr%40t@db.example:6543/telecoder?sslmode=require")
    assert env["PGPASSWORD"] == "s3cr@t"
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"]) == ("db.example", "6543", "tc")
    assert (env["PGDATABASE"], env["PGSSLMODE"]) == ("telecoder", "require")
    assert "PGPASSWORD" not in pg_env("postgresql://tc@db.example/telecoder")


async def test_a_bad_schedule_names_the_setting(store: Store, tmp_path: Path):
    with pytest.raises(BadInput, match="TELECODER_BACKUP_SCHEDULE: schedule 'every day'"):
        backups.BackupSchedule(store, Settings(home=tmp_path, backup_schedule="every day"))


async def test_scheduled_backups_fire_once_per_slot_and_keep_three(store: Store, tmp_path: Path):
    settings = Settings(
        home=tmp_path, backup_schedule="@every 10s", backup_dir=tmp_path / "b", backup_keep=3
    )
    # Two servers on one database, started before the first slot.
    servers = [backups.BackupSchedule(store, settings, since=1000.0) for _ in range(2)]
    assert [await s.tick(now=1005.0) for s in servers] == [None, None]  # no slot yet
    made = []
    for now in (1010.0, 1021.0, 1032.0, 1043.0, 1054.0):
        results = [await s.tick(now=now) for s in servers]
        assert len([r for r in results if r is not None]) == 1, results
        made.extend(r for r in results if r is not None)
        assert [await s.tick(now=now + 1) for s in servers] == [None, None]  # same slot
    files = backups.kept(tmp_path / "b")
    assert len(files) == 3
    assert files == [m.path for m in made[-3:]]
    assert all(m.sessions == 0 for m in made)


@pytest.mark.timeout(90)
def test_serve_backs_up_on_its_schedule(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    folder = tmp_path / "scheduled"
    proc = serve_process(
        home,
        "127.0.0.1",
        free_port(),
        TELECODER_BACKUP_SCHEDULE="@every 1s",
        TELECODER_BACKUP_DIR=str(folder),
        TELECODER_BACKUP_KEEP="2",
        TELECODER_JOBS_POLL_SECONDS="0.2",
    )
    try:
        wait_for(lambda: len(backups.kept(folder)) >= 2 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None
        seen = {p.name for p in backups.kept(folder)}
        wait_for(lambda: {p.name for p in backups.kept(folder)} - seen, timeout=10)
        assert len(backups.kept(folder)) == 2
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
