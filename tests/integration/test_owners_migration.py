"""Migration 0018 gives sessions submitted before it their owner: the ``origin.principal`` the
API and the dashboard recorded becomes ``user`` (and a run takes its sessions'); the CLI's and
the channels' sessions stay no one's. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from telecoder.store import migrations, open_store
from telecoder.store.db import Database
from tests.integration.test_migrations import _fresh_pg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched (the ``db_url`` ones start at HEAD)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'telecoder.db'}"
        return
    with _fresh_pg() as url:
        yield url


def _session(sid: str, origin: str | None, run_id: str | None = None) -> dict[str, object]:
    return {
        "id": sid,
        "origin": origin,
        "run_id": run_id,
        "branch": f"telecoder/{sid}",
    }


async def test_upgrade_to_0018_backfills_owners_from_the_origin(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        await migrations.upgrade(db, "0017")
        rows = [
            _session("s_api", '{"channel":"api","principal":"alice"}', run_id="run_a"),
            _session("s_dash", '{"channel":"dashboard","principal":"bob"}'),
            _session("s_tg", '{"channel":"telegram","principal":"mallory","user":"x"}'),
            _session("s_cli", None),
            _session("s_bad", '{"principal": not json'),
        ]
        async with db.write() as conn:
            await conn.execute(
                text(
                    "INSERT INTO runs (id, kind, status, spec, created_at, updated_at) "
                    "VALUES ('run_a', 'fanout', 'running', '{}', 1, 1), "
                    "('run_b', 'fanout', 'running', '{}', 1, 1)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO sessions (id, repo, prompt, engine, branch, status, origin, "
                    "run_id, available_at, created_at, updated_at) VALUES (:id, 'r', 'p', "
                    "'shell', :branch, 'queued', :origin, :run_id, 1, 1, 1)"
                ),
                rows,
            )
    finally:
        await db.dispose()
    store = await open_store(empty_url)  # upgrades to HEAD
    try:
        runs = {r: (await store.runs.get(r)).user for r in ("run_a", "run_b")}
        alices = await store.sessions.list(user="alice")
    finally:
        await store.close()
    db = Database(empty_url)
    try:
        async with db.read() as conn:  # (not through the store: one origin is not JSON)
            found = await conn.execute(text('SELECT id, "user" FROM sessions'))
            owners = {str(row[0]): row[1] for row in found.all()}
    finally:
        await db.dispose()
    assert owners == {
        "s_api": "alice", "s_dash": "bob", "s_tg": None, "s_cli": None, "s_bad": None
    }  # fmt: skip
    assert runs == {"run_a": "alice", "run_b": None}
    assert [s.id for s in alices.sessions] == ["s_api"]
