"""What ``council start TARGET`` reviews, asked of real remotes: a branch of a bare remote (and
the commit of the branch it is compared with), a question otherwise, a pull request looked up on
the fake GitHub (its head branch; the base branch's commit), and the refusals."""

from __future__ import annotations

import pytest

from telecoder.council_target import resolve
from telecoder.errors import BadInput, BaseRefNotFound
from telecoder.forges.github import GitHubForge
from telecoder.settings import Settings
from tests.conftest import GitRepo
from tests.fakes.github import TOKEN, FakeGitHub


def _branch(repo: GitRepo, name: str) -> str:
    repo.git("checkout", "-q", "-b", name)
    (repo.path / f"{name.replace('/', '-')}.txt").write_text("new\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", f"work on {name}")
    repo.git("push", "-q", "origin", name)
    repo.git("checkout", "-q", "main")
    return repo.git("rev-parse", name)


async def test_a_branch_of_the_remote_else_a_question(git_repo: GitRepo, settings: Settings):
    _branch(git_repo, "feature/x")
    _branch(git_repo, "develop")
    main = git_repo.git("rev-parse", "main")
    remote = str(git_repo.remote)

    found = await resolve("feature/x", remote_url=remote, base=None, settings=settings)
    against = await resolve("feature/x", remote_url=remote, base="develop", settings=settings)
    asked = await resolve("feature/y", remote_url=remote, base=None, settings=settings)
    question = await resolve("Is the cache safe?", remote_url=remote, base=None, settings=settings)

    assert (found.kind, found.ref, found.base, found.base_sha) == (
        "branch",
        "feature/x",
        "main",
        main,
    )
    assert (against.base, against.base_sha) == ("develop", git_repo.git("rev-parse", "develop"))
    assert (asked.kind, asked.text) == ("question", "feature/y")
    assert (question.kind, question.text) == ("question", "Is the cache safe?")
    with pytest.raises(BaseRefNotFound):
        await resolve("feature/x", remote_url=remote, base="nosuch", settings=settings)
    with pytest.raises(BadInput, match="its own base"):
        await resolve("main", remote_url=remote, base=None, settings=settings)
    with pytest.raises(BadInput, match="no GitHub remote"):
        await resolve("#3", remote_url="/nowhere/x", base=None, settings=settings)


async def test_a_pull_request_on_github(
    git_repo: GitRepo, settings: Settings, fake_github: FakeGitHub
):
    _branch(git_repo, "fix-it")
    fake_github.add_repo("acme", "repo", git_dir=git_repo.remote)
    pull = fake_github.add_pull("acme", "repo", head="fix-it")
    url = fake_github.git_url("acme", "repo")
    on_github = Settings(home=settings.home, github_api_url=fake_github.url, github_token=TOKEN)
    forge = GitHubForge.from_settings(on_github)
    await forge.ready(url)
    env = forge.git_env(url)  # as council start asks: with the forge's credentials

    for text in (
        f"#{pull.number}",
        str(pull.number),
        f"https://github.com/acme/repo/pull/{pull.number}",
    ):
        found = await resolve(text, remote_url=url, base=None, settings=on_github, env=env)
        assert (found.kind, found.number, found.ref, found.base) == (
            "pr",
            pull.number,
            "fix-it",
            "main",
        )
        assert found.base_sha == git_repo.git("rev-parse", "main")
    with pytest.raises(BadInput, match="no pull request #99"):
        await resolve("#99", remote_url=url, base=None, settings=on_github, env=env)
