"""``memory_scope.repo_key``: a name means the repository its sessions were stored under —
intake's own answer for the same ``--repo`` — with real git repositories and the registry."""

from __future__ import annotations

import pytest

from telecoder import registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.errors import BadInput, NotAGitRepo, RepoNotFound
from telecoder.intake import Request, accept
from telecoder.memory_scope import check_user, repo_key
from telecoder.store import Store
from tests.conftest import GitRepo


async def test_the_key_is_what_intake_stores_as_the_sessions_repo(store, settings, git_repo):
    (git_repo.path / "src").mkdir()
    for given in (str(git_repo.path / "src"), str(git_repo.path), str(git_repo.remote)):
        accepted = await accept(
            Request(repo=given, prompt="x", engine="shell"),
            settings=settings,
            workspace=build_workspace(settings),
            engines=registry.names("engines"),
            forges=build_forges(settings),
        )
        assert await repo_key(given, store=store, settings=settings) == accepted.session.repo


async def test_registered_names_shorthands_urls_and_gone_paths(
    store: Store, settings, git_repo: GitRepo
):
    await store.repos.add("app", str(git_repo.path), engine=None, priority=0)
    await store.repos.add("web", "acme/web", engine=None, priority=0)
    key = await repo_key("app", store=store, settings=settings)
    assert key == str(git_repo.path)
    github = "https://github.com/acme/web.git"
    assert await repo_key("web", store=store, settings=settings) == github
    assert await repo_key("acme/web", store=store, settings=settings) == github
    assert await repo_key(" git@example.com:a/b.git ", store=store, settings=settings) == (
        "git@example.com:a/b.git"
    )
    # A repository since removed: its memories can still be listed and forgotten.
    assert await repo_key("/gone/repo", store=store, settings=settings) == "/gone/repo"


@pytest.mark.parametrize(
    ("name", "error", "says"),
    [
        ("", BadInput, "empty"),
        ("--upload-pack=x", BadInput, "option"),
        ("https://u:secret-pw@example.com/r.git", BadInput, "credential"),
        ("nothing-by-this-name", RepoNotFound, "registered"),
        ("a\x00b", BadInput, "NUL"),
        ("x" * 5000, BadInput, "at most"),
        ("/" + "y" * 300 + "/z", BadInput, "cannot read"),
    ],
)
async def test_names_that_name_nothing(store, settings, name, error, says):
    with pytest.raises(error, match=says):
        await repo_key(name, store=store, settings=settings)


async def test_a_directory_that_is_no_repository(store, settings, tmp_path):
    with pytest.raises(NotAGitRepo):
        await repo_key(str(tmp_path), store=store, settings=settings)


def test_users():
    assert check_user("telegram:42") == "telegram:42"
    for bad in ("", "  ", "a\x00", "u" * 256):
        with pytest.raises(BadInput):
            check_user(bad)
