"""What a task starts from, checked when it is submitted: local commits the remote lacks are
named in a warning; a remote whose HEAD points to no branch is refused unless a base is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecoder import registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.errors import BaseRefNotFound
from telecoder.intake import Accepted, Request, accept
from telecoder.settings import Settings
from tests.conftest import GitRepo, git


async def _accept(home: Path, repo: Path, **request: str) -> Accepted:
    settings = Settings(home=home)
    return await accept(
        Request(repo=str(repo), prompt="true", engine="shell", **request),
        settings=settings,
        workspace=build_workspace(settings),
        engines=registry.names("engines"),
        forges=build_forges(settings),
    )


async def test_local_commits_not_pushed_are_named(home: Path, git_repo: GitRepo) -> None:
    assert (await _accept(home, git_repo.path)).warnings == []
    for n in (1, 2):
        (git_repo.path / f"local{n}.txt").write_text("only here\n")
        git("add", "-A", cwd=git_repo.path)
        git("commit", "-q", "-m", f"local {n}", cwd=git_repo.path)
    [warning] = (await _accept(home, git_repo.path)).warnings
    assert "2 local commits not pushed to origin" in warning
    assert "will not see them" in warning
    git("push", "-q", "origin", "main", cwd=git_repo.path)
    assert (await _accept(home, git_repo.path)).warnings == []


async def test_a_remote_whose_head_points_to_no_branch_needs_a_base(
    home: Path, git_repo: GitRepo
) -> None:
    git("symbolic-ref", "HEAD", "refs/heads/master", cwd=git_repo.remote)  # no such branch
    with pytest.raises(BaseRefNotFound) as refused:
        await _accept(home, git_repo.path)
    assert "has no default branch" in str(refused.value)
    assert "--base" in str(refused.value)
    assert "branches: main" in str(refused.value)
    named = await _accept(home, git_repo.path, base="main")  # a named base is enough
    assert named.session.base_ref == "main"
