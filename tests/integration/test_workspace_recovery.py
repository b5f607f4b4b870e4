"""What a SIGKILLed git leaves in a mirror — lock files, a half-made worktree — does not stop the
next attempt: preparing a worktree (under the mirror's lock) clears it and goes on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from telecoder.errors import PushRejected
from telecoder.workspace import Workspace
from tests.conftest import GitRepo


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(mirrors=tmp_path / "mirrors", worktrees=tmp_path / "worktrees", pool_size=0)


async def test_a_stale_ref_lock_is_cleared(workspace: Workspace, git_repo: GitRepo):
    source = await workspace.resolve(str(git_repo.path))
    first = await workspace.prepare("s1-1", source, branch="telecoder/s1", base=None)
    mirror = first.mirror
    # A fetch was killed half-way, long ago.
    (mirror / "refs/remotes/origin/main.lock").write_text("")
    # ... and the remote moved on, so the next fetch must update refs/remotes/origin/main.
    (git_repo.path / "more.txt").write_text("more\n")
    git_repo.git("add", "more.txt")
    git_repo.git("commit", "-q", "-m", "more")
    git_repo.git("push", "-q", "origin", "main")

    second = await workspace.prepare("s2-1", source, branch="telecoder/s2", base=None)
    assert second.base_sha == git_repo.git("rev-parse", "HEAD") != first.base_sha
    assert not list(mirror.glob("**/*.lock"))


async def test_a_half_made_worktree_and_a_branch_lock_are_cleared(
    workspace: Workspace, git_repo: GitRepo
):
    source = await workspace.resolve(str(git_repo.path))
    wt = await workspace.prepare("s1-1", source, branch="telecoder/s1", base=None)
    # `git worktree add` killed half-way: the worktree is locked "initializing" and its
    # files are partly there; a `git commit` killed half-way left the branch's ref locked.
    (wt.mirror / "worktrees" / "s1-1" / "locked").write_text("initializing")
    (wt.path / "README.md").unlink()
    (wt.mirror / "refs" / "heads" / "telecoder" / "s1.lock").write_text("")

    again = await workspace.prepare("s1-2", source, branch="telecoder/s1", base=None)
    assert (again.path / "README.md").is_file()
    assert not wt.path.exists()
    listed = (wt.mirror / "worktrees").iterdir()
    assert [p.name for p in listed] == ["s1-2"]


async def test_a_fresh_lock_on_the_remote_is_respected_a_stale_one_cleared(
    workspace: Workspace, git_repo: GitRepo
):
    """A remote on this host: its receiving git dies with a SIGKILLed worker and leaves the
    session's branch locked. A lock seconds old is stale (a push holds one for milliseconds);
    a fresh one belongs to someone pushing right now."""
    source = await workspace.resolve(str(git_repo.path))
    wt = await workspace.prepare("s1-1", source, branch="telecoder/s1", base=None)
    (wt.path / "x.txt").write_text("x\n")
    sha = await workspace.commit(wt, "x", date=0)
    assert sha is not None
    lock = git_repo.remote / "refs" / "heads" / "telecoder" / "s1.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    with pytest.raises(PushRejected, match=r"s1\.lock"):
        await workspace.push(wt, sha)
    assert lock.exists()
    old = time.time() - 30
    os.utime(lock, (old, old))
    assert await workspace.push(wt, sha)
    assert git_repo.remote_git("rev-parse", "telecoder/s1") == sha
    assert not lock.exists()


async def test_a_worktree_add_killed_half_way_does_not_break_later_fetches(
    workspace: Workspace, git_repo: GitRepo
):
    source = await workspace.resolve(str(git_repo.path))
    wt = await workspace.prepare("s1-1", source, branch="telecoder/s1", base=None)
    # What `git worktree add` has written when it is killed before checking anything out:
    # an admin entry locked "initializing" whose HEAD is the null id.
    admin = wt.mirror / "worktrees" / "s2-1"
    admin.mkdir()
    (admin / "locked").write_text("initializing")
    (admin / "HEAD").write_text("0" * 40 + "\n")
    (admin / "commondir").write_text("../..\n")
    half = workspace.worktrees / "s2-1"
    half.mkdir()
    (half / ".git").write_text(f"gitdir: {admin}\n")
    (admin / "gitdir").write_text(f"{half / '.git'}\n")

    again = await workspace.prepare("s3-1", source, branch="telecoder/s3", base=None)
    assert (again.path / "README.md").is_file()
    assert not admin.exists()
    assert not half.exists()
    assert wt.path.exists()  # a worktree in use is left alone
