"""Chains: follow-ups spawned by ``.telecoder.yml`` rules when a session ends, for real (shell
engine, git repositories with bare remotes, both store backends)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from telecoder.assemble import build_worker
from telecoder.domain import EventKind, NewSession, Session, SessionStatus
from telecoder.settings import Settings
from telecoder.store import Outcome, Store
from telecoder.store.chains import spawn
from telecoder.store.schema import sessions
from telecoder.worker import Worker
from tests.conftest import GitRepo, make_repo


def tuned(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"kill_grace_seconds": 1.0, **changes})


def repo_with(tmp_path: Path, config: str) -> GitRepo:
    return make_repo(tmp_path, files={"README.md": "chains\n", ".telecoder.yml": config})


async def drain(worker: Worker, store: Store, most: int = 10) -> list[Session]:
    """Run queued sessions until none is left; those that ran, in order."""
    ran: list[Session] = []
    while (claimed := await store.queue.claim(worker.id)) is not None:
        assert len(ran) < most, "the chain did not stop"
        async with asyncio.timeout(30):
            done = await worker.execute(claimed)
        assert done is not None
        ran.append(await store.sessions.get(done.id))  # as the chain left it
    return ran


async def chain_notes(store: Store, session_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await store.events.list(session_id) if e.kind == EventKind.CHAIN]


async def test_a_chain_whose_every_session_spawns_a_child_stops_at_depth_3(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, 'on_success:\n  - "echo {{ session.depth }} >> chain.txt"\n')
    worker = build_worker(tuned(settings), store)
    root = NewSession(repo=str(repo.path), prompt="echo root >> chain.txt", engine="shell")
    await store.sessions.create(root)
    ran = await drain(worker, store)
    assert [s.status for s in ran] == [SessionStatus.SUCCEEDED] * 4
    assert [s.depth for s in ran] == [0, 1, 2, 3]
    assert [s.chain_id for s in ran] == [root.id] * 4
    assert [s.parent_id for s in ran] == [None, ran[0].id, ran[1].id, ran[2].id]
    assert [s.prompt for s in ran[1:]] == [f"echo {d} >> chain.txt" for d in range(3)]
    # Each follow-up started from its parent's branch: the last branch holds every step.
    last = ran[-1]
    assert last.result is not None
    assert last.result.branch is not None
    assert repo.remote_git("show", f"{last.result.branch}:chain.txt").split() == [
        "root", "0", "1", "2",
    ]  # fmt: skip
    assert [s.base_ref for s in ran[1:]] == [s.branch for s in ran[:-1]]
    # The 4th level is refused, with an event on the parent that says so.
    [refused] = await chain_notes(store, last.id)
    assert (refused["refused"], refused["depth"], refused["max_depth"]) == ("depth", 4, 3)
    assert "TELECODER_CHAIN_MAX_DEPTH" in refused["message"]
    [spawned] = await chain_notes(store, ran[0].id)
    assert spawned["spawned"] == ran[1].id


async def test_the_depth_limit_is_a_setting(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, 'on_success: "echo {{ session.depth }} >> chain.txt"\n')
    worker = build_worker(tuned(settings, chain_max_depth=1), store)
    await store.sessions.create(NewSession(repo=str(repo.path), prompt="true", engine="shell"))
    ran = await drain(worker, store)
    assert [s.depth for s in ran] == [0, 1]


async def test_the_same_prompt_twice_in_a_chain_is_spawned_once(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "on_success:\n  - prompt: echo again >> loop.txt\n")
    worker = build_worker(tuned(settings), store)
    root = NewSession(repo=str(repo.path), prompt="echo first >> loop.txt", engine="shell")
    await store.sessions.create(root)
    ran = await drain(worker, store)
    assert [s.prompt for s in ran] == ["echo first >> loop.txt", "echo again >> loop.txt"]
    [note] = await chain_notes(store, ran[1].id)
    assert note["refused"] == "duplicate"
    async with store.db.read() as conn:
        count = (
            await conn.execute(select(func.count()).where(sessions.c.chain_id == root.id))
        ).scalar()
    assert count == 2


CONFIG = """\
on_success:
  - echo after success >> note.txt
on_failure:
  - prompt: "echo '{{ session.id }} failed: {{ session.error }}' > why.txt"
    engine: shell
"""


@pytest.mark.parametrize("succeeds", [True, False])
async def test_on_failure_fires_on_failure_only(
    settings: Settings, store: Store, tmp_path: Path, succeeds: bool
) -> None:
    repo = repo_with(tmp_path, CONFIG)
    worker = build_worker(tuned(settings), store)
    prompt = "echo fine >> note.txt" if succeeds else "echo broken >&2; exit 3"
    root = NewSession(repo=str(repo.path), prompt=prompt, engine="shell", max_attempts=1)
    await store.sessions.create(root)
    parent, child, *rest = await drain(worker, store)
    # The follow-up succeeds in turn: its own on_success (once in the chain).
    assert [s.prompt for s in rest] == ([] if succeeds else ["echo after success >> note.txt"])
    assert parent.status == (SessionStatus.SUCCEEDED if succeeds else SessionStatus.FAILED)
    assert child.status == SessionStatus.SUCCEEDED, child.error
    assert (child.parent_id, child.chain_id, child.depth) == (root.id, root.id, 1)
    if succeeds:
        assert child.prompt == "echo after success >> note.txt"
        assert child.base_ref == parent.branch  # it pushed one
    else:
        assert child.prompt.startswith(f"echo '{root.id} failed: ")
        assert "broken" in child.prompt
        assert child.base_ref is None  # nothing pushed: the repository's default branch
        assert child.result is not None
        assert child.result.branch is not None
        why = repo.remote_git("show", f"{child.result.branch}:why.txt")
        assert why.startswith(f"{root.id} failed: ")


async def test_a_placeholder_in_a_rendered_value_is_not_rendered_again(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, 'on_success: "echo {{ result.text }}"\n')
    worker = build_worker(tuned(settings), store)
    await store.sessions.create(
        NewSession(repo=str(repo.path), prompt="echo '{{ session.id }}'", engine="shell")
    )
    _parent, child = await drain(worker, store)
    assert child.prompt == "echo {{ session.id }}"
    assert child.result is not None
    assert child.result.text == "{{ session.id }}"


async def test_spawning_is_part_of_the_transaction_that_ends_the_session(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    """A crash between the end and the spawn is impossible: they commit together or not at all;
    and an end written twice (a retried write) is refused by the lease, so no second child."""
    repo = repo_with(tmp_path, "on_success: [echo child]\n")
    new = NewSession(repo=str(repo.path), prompt="echo parent", engine="shell")
    claimed = await store.queue.create_claimed(new, "w1")
    rules = '{"max_depth": 3, "on_success": [{"prompt": "echo child"}], "on_failure": []}'
    await store.queue.record(claimed.lease, follow_ups=rules)
    ended = await store.sessions.get(new.id)
    # The worker dies inside the finishing transaction, after the spawn: all rolled back.
    with pytest.raises(RuntimeError, match="killed"):
        await _killed_after_the_spawn(store, replace(ended, status=SessionStatus.SUCCEEDED))
    assert await _chain_rows(store, new.id) == [(new.id, "running", None)]
    # The real end: the session and its one child, together.
    final = await store.queue.finish(claimed.lease, Outcome(status=SessionStatus.SUCCEEDED))
    assert final.status == SessionStatus.SUCCEEDED
    rows = await _chain_rows(store, new.id)
    assert [(r[1], r[2]) for r in rows] == [("succeeded", None), ("queued", new.id)]
    # Written again (a worker retrying its write): refused, and still one child.
    with pytest.raises(Exception, match="lost the lease"):
        await store.queue.finish(claimed.lease, Outcome(status=SessionStatus.SUCCEEDED))
    assert len(await _chain_rows(store, new.id)) == 2


async def _killed_after_the_spawn(store: Store, ended: Session) -> None:
    async with store.db.write() as conn:
        await conn.execute(
            sessions.update().where(sessions.c.id == ended.id).values(status="succeeded")
        )
        assert len(await spawn(conn, store.db, ended, 0.0)) == 1
        raise RuntimeError("killed before the commit")


async def _chain_rows(store: Store, root: str) -> list[tuple[str, str, str | None]]:
    query = (
        select(sessions.c.id, sessions.c.status, sessions.c.parent_id)
        .where((sessions.c.id == root) | (sessions.c.chain_id == root))
        .order_by(sessions.c.depth)
    )
    async with store.db.read() as conn:
        return [tuple(r) for r in (await conn.execute(query)).all()]  # type: ignore[misc]


async def test_the_dashboard_and_show_name_the_chain(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    from telecoder.server import create_app
    from tests.server import client

    repo = repo_with(tmp_path, 'on_success: "echo {{ session.depth }} >> chain.txt"\n')
    worker = build_worker(tuned(settings, chain_max_depth=2), store)
    await store.sessions.create(NewSession(repo=str(repo.path), prompt="true", engine="shell"))
    root, child, grandchild = await drain(worker, store)
    async with client(create_app(settings, store)) as c:
        page = await c.get(f"/sessions/{child.id}", headers={"accept": "text/html"})
        api = await c.get(f"/api/sessions/{grandchild.id}")
    assert page.status_code == 200
    assert f'id="follows">{root.id}</a>' in page.text
    assert 'id="chain"' in page.text
    for member in (root, grandchild):
        assert f'href="/sessions/{member.id}"' in page.text
    assert page.text.count("data-depth=") == 3
    shown = api.json()
    assert (shown["chain_id"], shown["parent_id"], shown["depth"]) == (root.id, child.id, 2)
    members = await store.chains.members(root.id)
    assert [(s.id, s.depth) for s in members] == [(root.id, 0), (child.id, 1), (grandchild.id, 2)]


def test_show_names_the_parent_and_the_chain(tmp_path: Path) -> None:
    import json

    from tests.cli import cli_env, telecoder

    repo = repo_with(tmp_path, "on_success: [echo follow-up]\n")
    env = cli_env(tmp_path / "home")
    ran = telecoder(
        "run", "echo root", "--repo", str(repo.path), "--engine", "shell", "--json", env=env
    )
    assert ran.returncode == 0, ran.stderr
    root = json.loads(ran.stdout)["id"]
    listed = telecoder("list", "--json", env=env)
    [child] = [s for s in json.loads(listed.stdout)["sessions"] if s["id"] != root]
    assert (child["parent_id"], child["chain_id"], child["depth"]) == (root, root, 1)
    shown = telecoder("show", child["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "follows" in shown.stdout
    assert f"{root} (depth 1)" in shown.stdout
    assert "retry of" not in shown.stdout
