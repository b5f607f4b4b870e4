"""Warm mirrors: a burst of prepares on one repository shares one fetch; the pool is refilled in
the background and a session takes a pooled worktree at its base with nothing of the last one
left; a pooled worktree whose maker died is discarded. Real git throughout; fetches are counted
from git's own trace (``GIT_TRACE``), handed to git through the fetch's environment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telecoder.assemble import build_worker
from telecoder.mirrors import admin_dir
from telecoder.settings import Settings
from telecoder.store import open_store
from telecoder.warmpool import MAKING, WARM, WorktreePool
from telecoder.workspace import Workspace, Worktree
from tests.conftest import GitRepo, git


@pytest.fixture
async def ws(tmp_path: Path) -> AsyncIterator[Workspace]:
    """A workspace whose pool of 2 is refilled in the background, as a worker does."""
    ws = Workspace(mirrors=tmp_path / "mirrors", worktrees=tmp_path / "worktrees", pool_size=2)
    halt = asyncio.Event()
    refilling = asyncio.create_task(ws.pool.run(halt))
    yield ws
    halt.set()
    await asyncio.wait_for(refilling, 10)


async def prepare(ws: Workspace, repo: GitRepo, name: str, trace: Path | None = None) -> Worktree:
    source = await ws.resolve(str(repo.path))
    env = {"GIT_TRACE": str(trace)} if trace else None
    return await ws.prepare(name, source, branch=f"telecoder/{name}", base=None, env=env)


def fetches(trace: Path) -> int:
    text = trace.read_text() if trace.exists() else ""
    return sum("built-in: git fetch" in line for line in text.splitlines())


def push_commit(repo: GitRepo, name: str) -> str:
    (repo.path / name).write_text(f"{name}\n")
    repo.git("add", name)
    repo.git("commit", "-q", "-m", name)
    repo.git("push", "-q", "origin", "main")
    return repo.git("rev-parse", "HEAD")


async def filled(pool: WorktreePool, mirror: Path, count: int) -> list[Path]:
    deadline = time.monotonic() + 15
    while len(ready := pool.ready(mirror)) < count or pool.count(mirror) > count:
        assert time.monotonic() < deadline, f"pool: {ready}"
        await asyncio.sleep(0.02)
    return ready


async def test_a_burst_shares_one_fetch_a_later_prepare_fetches_again(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    await prepare(ws, git_repo, "first", trace)
    assert fetches(trace) == 1
    new = push_commit(git_repo, "new.txt")
    burst = await asyncio.gather(*(prepare(ws, git_repo, f"b{i}", trace) for i in range(4)))
    assert fetches(trace) == 2  # one for the four
    assert {wt.base_sha for wt in burst} == {new}
    assert all((wt.path / "new.txt").is_file() for wt in burst)
    newer = push_commit(git_repo, "newer.txt")
    later = await prepare(ws, git_repo, "later", trace)
    assert fetches(trace) == 3
    assert later.base_sha == newer
    assert (later.path / "newer.txt").read_text() == "newer.txt\n"


async def test_the_pool_refills_and_a_session_takes_a_clean_worktree(
    ws: Workspace, git_repo: GitRepo
) -> None:
    (git_repo.path / ".gitignore").write_text("*.log\n")
    git_repo.git("add", ".gitignore")
    git_repo.git("commit", "-q", "-m", "ignore logs")
    git_repo.git("push", "-q", "origin", "main")
    first = await prepare(ws, git_repo, "s1")
    warm = await filled(ws.pool, first.mirror, 2)
    assert all(p.name.startswith(WARM) for p in warm)
    for pooled in warm:  # detached at the default branch's head, every file there
        assert git("rev-parse", "HEAD", cwd=pooled) == first.base_sha
        assert git("status", "--porcelain", cwd=pooled) == ""
        assert (pooled / "README.md").read_text() == "The colour of magic.\n"
    # Whatever was left in them (a stray writer) is gone when a session takes one.
    for pooled in warm:
        (pooled / "README.md").write_text("modified\n")
        (pooled / ".gitignore").unlink()
        (pooled / "untracked.txt").write_text("x\n")
        (pooled / "build.log").write_text("ignored\n")
        (pooled / "deep" / "er").mkdir(parents=True)
        (pooled / "deep" / "er" / "file").write_text("x\n")
    new = push_commit(git_repo, "new.txt")

    second = await prepare(ws, git_repo, "s2")
    assert second.base_sha == new
    assert git("rev-parse", "HEAD", cwd=second.path) == new
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=second.path) == "telecoder/s2"
    assert git("status", "--porcelain", "--ignored", cwd=second.path) == ""
    assert sorted(p.name for p in second.path.iterdir()) == [
        ".git",
        ".gitignore",
        "README.md",
        "new.txt",
    ]
    assert (second.path / "README.md").read_text() == "The colour of magic.\n"
    left = ws.pool.ready(first.mirror)
    assert len(left) == 1  # it took one of them
    assert left[0] in warm
    # ... and the pool is refilled, the new one at the new head.
    again = await filled(ws.pool, first.mirror, 2)
    assert [git("rev-parse", "HEAD", cwd=p) for p in again if p not in warm] == [new]


async def test_a_warm_worktree_at_the_base_is_taken_as_it_is(
    ws: Workspace, git_repo: GitRepo
) -> None:
    """One the refill made at the session's base is taken without a reset (which would re-read
    every file of a big repository): its index is the refill's own, its files the base's."""
    first = await prepare(ws, git_repo, "s1")
    warm = await filled(ws.pool, first.mirror, 2)
    written = {(admin_dir(first.mirror, p) / "index").stat().st_mtime_ns for p in warm}
    second = await prepare(ws, git_repo, "s2")
    assert second.base_sha == first.base_sha
    index = second.git_dir / "index"
    assert index.stat().st_mtime_ns in written  # not rewritten by a reset
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=second.path) == "telecoder/s2"
    assert git("rev-parse", "HEAD", cwd=second.path) == first.base_sha
    assert git("status", "--porcelain", "--ignored", cwd=second.path) == ""
    assert (second.path / "README.md").read_text() == "The colour of magic.\n"


async def test_a_half_made_pooled_worktree_is_discarded(
    ws: Workspace, git_repo: GitRepo, tmp_path: Path
) -> None:
    first = await prepare(ws, git_repo, "s1")
    await filled(ws.pool, first.mirror, 2)
    await prepare(ws, git_repo, "s2")  # takes one; the refill makes another
    await prepare(ws, git_repo, "s3")
    await filled(ws.pool, first.mirror, 2)
    # A refill of a process that died, killed while it wrote the files.
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    pool = ws.pool.dir(first.mirror)
    for pooled in ws.pool.ready(first.mirror):
        await ws._discard(first.mirror, pooled)
    half = pool / f"{MAKING}{dead.pid}-abc"
    add = ("worktree", "add", "-q", "--detach", "--no-checkout", str(half), first.base_sha)
    git(*add, cwd=first.mirror)
    (half / "partial.txt").write_text("half written\n")

    fourth = await prepare(ws, git_repo, "s4")  # none to take: a worktree of its own
    assert git("status", "--porcelain", "--ignored", cwd=fourth.path) == ""
    warm = await filled(ws.pool, first.mirror, 2)
    assert not half.exists()
    assert all(p.name.startswith(WARM) for p in warm)
    listed = git("worktree", "list", "--porcelain", cwd=first.mirror)
    assert str(half) not in listed


async def test_the_refill_stops_when_halted(git_repo: GitRepo, tmp_path: Path) -> None:
    ws = Workspace(mirrors=tmp_path / "m", worktrees=tmp_path / "w", pool_size=50)
    halt = asyncio.Event()
    refilling = asyncio.create_task(ws.pool.run(halt))
    wt = await prepare(ws, git_repo, "s1")
    deadline = time.monotonic() + 10
    while ws.pool.made < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    halt.set()
    await asyncio.wait_for(refilling, 5)
    made = ws.pool.count(wt.mirror)
    assert made < 50
    assert not list(ws.pool.dir(wt.mirror).glob(f"{MAKING}*"))  # the one under way is gone
    await asyncio.sleep(0.2)
    assert ws.pool.count(wt.mirror) == made


async def test_a_worker_refills_the_pool_until_it_stops(
    settings: Settings, git_repo: GitRepo, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"worktree_pool": 1})
    store = await open_store(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        worker = build_worker(settings, store)
        pool = worker.side
        assert isinstance(pool, WorktreePool)
        ws = Workspace(mirrors=settings.mirrors, worktrees=settings.worktrees, pool_size=0)
        wt = await prepare(ws, git_repo, "s1")  # the mirror, as a session of the worker made it
        pool.want(wt.mirror)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await filled(pool, wt.mirror, 1)
        stop.set()
        await asyncio.wait_for(running, 10)
    finally:
        await store.close()


async def test_a_removed_worktree_is_moved_aside_then_deleted_and_leftovers_go(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    """A removal holds the mirror's lock only to move the files aside (``.trash``) and drop the
    records; the files are deleted after. What a crash left in ``.trash`` goes when the pool
    runs."""
    ws = Workspace(mirrors=tmp_path / "m", worktrees=tmp_path / "w", pool_size=0)
    wt = await prepare(ws, git_repo, "s1")
    (wt.path / "made.txt").write_text("by the agent\n")
    await ws.remove(wt)
    assert not wt.path.exists()
    assert str(wt.path) not in git("worktree", "list", "--porcelain", cwd=wt.mirror)
    assert list((ws.worktrees / ".trash").iterdir()) == []
    again = await prepare(ws, git_repo, "s1")  # the same name and branch: nothing in the way
    assert git("status", "--porcelain", "--ignored", cwd=again.path) == ""
    left = ws.worktrees / ".trash" / "s0-dead"
    (left / "deep").mkdir(parents=True)
    (left / "deep" / "file").write_text("x\n")
    halt = asyncio.Event()
    halt.set()
    await asyncio.wait_for(ws.pool.run(halt), 10)
    assert not left.exists()
