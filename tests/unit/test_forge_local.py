"""The local forge is the fallback: it takes any remote and adds nothing to the pushed branch."""

from __future__ import annotations

from telecoder import registry
from telecoder.forges.github import GitHubForge
from telecoder.forges.local import LocalForge
from telecoder.protocols import Forge, Publication, Published


async def test_local_forge_takes_any_remote_and_publishes_the_branch_alone() -> None:
    forge: Forge = LocalForge()
    assert forge.handles("/srv/git/acme/repo.git")
    assert forge.handles("https://github.com/acme/repo.git")
    assert forge.git_env("https://github.com/acme/repo.git") == {}
    publication = Publication(
        session_id="s1",
        remote_url="/srv/git/acme/repo.git",
        branch="telecoder/s1",
        base="main",
        title="t",
        body="b",
    )
    assert await forge.publish(publication) == Published()


def test_forges_are_found_through_their_entry_points() -> None:
    assert isinstance(registry.create("forges", "local"), LocalForge)
    github = registry.create("forges", "github")
    assert isinstance(github, GitHubForge)
    assert github.git_env("https://github.com/acme/repo.git") == {}  # no token, no credentials
