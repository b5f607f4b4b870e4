"""Where a strict orch run's code task starts: the checkout's changes, named; its HEAD pinned."""

from __future__ import annotations

from telecoder import pinning
from telecoder.worktree import RepoSource
from tests.conftest import GitRepo


async def test_the_changes_of_a_checkout_are_named(git_repo: GitRepo) -> None:
    assert await pinning.dirty_paths(git_repo.path) == []
    git_repo.git("mv", "README.md", "READ ME.md")
    (git_repo.path / "new.txt").write_text("new\n")
    assert sorted(await pinning.dirty_paths(git_repo.path)) == ["READ ME.md", "new.txt"]
    message = pinning.dirty_message("A", git_repo.path, [f"f{i}" for i in range(12)])
    assert "f9 and 2 more" in message
    assert "f10" not in message


async def test_the_commit_pinned_is_the_checkouts_head_else_the_remotes(
    git_repo: GitRepo,
) -> None:
    head = git_repo.git("rev-parse", "HEAD")
    checkout = RepoSource(spec=str(git_repo.path), remote_url=str(git_repo.remote),
                          checkout=git_repo.path)  # fmt: skip
    assert await pinning.head_commit(checkout) == head
    (git_repo.path / "more.txt").write_text("more\n")
    git_repo.git("add", "more.txt")
    git_repo.git("commit", "-q", "-m", "local only")
    assert await pinning.head_commit(checkout) == git_repo.git("rev-parse", "HEAD") != head
    remote = RepoSource(spec=str(git_repo.remote), remote_url=str(git_repo.remote))
    assert await pinning.head_commit(remote) == head  # what the remote's HEAD is at
    gone = RepoSource(spec="x", remote_url=str(git_repo.path / "nowhere"))
    assert await pinning.head_commit(gone) is None
