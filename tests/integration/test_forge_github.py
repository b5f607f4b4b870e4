"""GitHubForge against the fake GitHub over real HTTP, with real git repositories behind it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from telecoder.errors import ForgeError
from telecoder.forges.github import NO_TOKEN, GitHubForge
from telecoder.protocols import Forge, Publication, Published
from tests.conftest import GIT_ENV, GitRepo
from tests.fakes.github import FakeGitHub

BRANCH = "telecoder/s1"


def make_forge(fake: FakeGitHub, token: str | None = None, **kwargs: Any) -> GitHubForge:
    kwargs.setdefault("backoff", 0.01)
    return GitHubForge(
        token=fake.token if token is None else token,
        api_url=fake.url,
        hosts=("127.0.0.1",),
        port=urlsplit(fake.url).port,
        **kwargs,
    )


def commit_and_push(repo: GitRepo, branch: str = BRANCH, name: str = "change.txt") -> None:
    repo.git("checkout", "-q", "-B", branch)
    (repo.path / name).write_text(f"{name} on {branch}\n")
    repo.git("add", name)
    repo.git("commit", "-q", "-m", f"add {name}")
    repo.git("push", "-q", "--force", "origin", branch)


@pytest.fixture
def forge(fake_github: FakeGitHub) -> GitHubForge:
    return make_forge(fake_github)


@pytest.fixture
def repo(git_repo: GitRepo, fake_github: FakeGitHub) -> GitRepo:
    """``acme/repo`` on the fake, backed by the bare remote, with ``BRANCH`` pushed."""
    fake_github.add_repo("acme", "repo", git_repo.remote)
    commit_and_push(git_repo)
    return git_repo


@pytest.fixture
def publication(repo: GitRepo) -> Publication:
    return Publication(
        session_id="s1",
        remote_url=str(repo.remote),
        branch=BRANCH,
        base="main",
        title="Fix the flaky test",
        body="Changed: tests/test_x.py",
    )


async def test_publish_opens_a_pull_request(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    published = await forge.publish(publication)

    assert published == Published(url=f"{fake_github.url}/acme/repo/pull/1", number=1)
    [pull] = fake_github.pulls("acme", "repo")
    assert (pull.head, pull.base, pull.state) == (BRANCH, "main", "open")
    assert (pull.title, pull.body) == ("Fix the flaky test", "Changed: tests/test_x.py")
    assert pull.maintainer_can_modify
    [lookup, create] = fake_github.api_requests()
    assert (lookup.method, lookup.query["head"], lookup.query["state"]) == (
        "GET",
        f"acme:{BRANCH}",
        "all",
    )
    assert create.method == "POST"
    assert create.json == {
        "title": "Fix the flaky test",
        "head": BRANCH,
        "base": "main",
        "body": "Changed: tests/test_x.py",
        "maintainer_can_modify": True,
    }
    for request in (lookup, create):
        assert request.headers["authorization"] == f"Bearer {fake_github.token}"
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"


async def test_a_partial_result_opens_a_draft_pull_request(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    await forge.publish(replace(publication, title="[partial] Fix the flaky test", draft=True))
    [pull] = fake_github.pulls("acme", "repo")
    assert (pull.title, pull.draft) == ("[partial] Fix the flaky test", True)
    create = fake_github.api_requests()[-1]
    assert create.json["draft"] is True


async def test_publishing_again_updates_the_pull_request_instead_of_opening_another(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    first = await forge.publish(publication)
    second = await forge.publish(replace(publication, title="Fix it, take two", body="v2"))

    assert second == first
    [pull] = fake_github.pulls("acme", "repo")
    assert (pull.title, pull.body, pull.state) == ("Fix it, take two", "v2", "open")
    assert [r.method for r in fake_github.api_requests()] == ["GET", "POST", "GET", "PATCH"]


async def test_an_open_pull_request_opened_elsewhere_is_the_one_updated(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    fake_github.add_pull("acme", "repo", head="unrelated")
    theirs = fake_github.add_pull("acme", "repo", head=BRANCH, base="develop")

    published = await forge.publish(publication)

    assert published.number == theirs.number
    assert len(fake_github.pulls("acme", "repo")) == 2
    assert theirs.base == "develop"  # retargeted by a human: left alone
    assert theirs.title == publication.title


async def test_losing_the_race_to_create_returns_the_winner(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    winner: list[int] = []
    fake_github.before_next(
        "POST",
        "/repos/acme/repo/pulls",
        lambda: winner.append(fake_github.add_pull("acme", "repo", head=BRANCH).number),
    )

    published = await forge.publish(publication)

    assert published.number == winner[0]
    assert len(fake_github.pulls("acme", "repo")) == 1
    methods = [r.method for r in fake_github.api_requests()]
    assert methods == ["GET", "POST", "GET", "PATCH"]  # POST answered 422, then found and updated


async def test_concurrent_publishes_open_one_pull_request(
    fake_github: FakeGitHub, publication: Publication
) -> None:
    forges = [make_forge(fake_github) for _ in range(4)]
    results = await asyncio.gather(*(forge.publish(publication) for forge in forges))

    assert len(fake_github.pulls("acme", "repo")) == 1
    assert {result.number for result in results} == {1}


async def test_a_lost_answer_to_create_is_retried_without_a_second_pull_request(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    # GitHub opened the pull request, then the answer was lost (here: a 502 after the fact).
    def open_then_fail() -> None:
        fake_github.add_pull("acme", "repo", head=BRANCH, title="first try")
        fake_github.fail_next(502)

    fake_github.before_next("POST", "/repos/acme/repo/pulls", open_then_fail)

    published = await forge.publish(publication)

    [pull] = fake_github.pulls("acme", "repo")
    assert published.number == pull.number
    assert pull.title == publication.title
    methods = [r.method for r in fake_github.api_requests()]
    assert methods == ["GET", "POST", "POST", "GET", "PATCH"]  # 502, then 422: it exists


async def test_a_closed_pull_request_is_reopened(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication, repo: GitRepo
) -> None:
    first = await forge.publish(publication)
    fake_github.close("acme", "repo", 1)
    commit_and_push(repo, name="follow-up.txt")  # a follow-up pushed more work

    second = await forge.publish(replace(publication, title="Follow-up"))

    assert second == first
    [pull] = fake_github.pulls("acme", "repo")
    assert (pull.state, pull.title) == ("open", "Follow-up")


async def test_a_closed_pull_request_that_cannot_be_reopened_is_replaced(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication, repo: GitRepo
) -> None:
    await forge.publish(publication)
    fake_github.close("acme", "repo", 1)
    # The attempt starts again from base and force-pushes: GitHub refuses to reopen.
    repo.git("checkout", "-q", "main")
    repo.git("branch", "-q", "-D", BRANCH)
    commit_and_push(repo, name="another.txt")

    published = await forge.publish(publication)

    assert published.number == 2
    old, new = fake_github.pulls("acme", "repo")
    assert (old.state, new.state) == ("closed", "open")
    patch = fake_github.api_requests("PATCH")[-1]
    assert patch.json is not None
    assert patch.json["state"] == "open"  # it tried to reopen first


async def test_work_pushed_after_a_merge_gets_a_new_pull_request(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication, repo: GitRepo
) -> None:
    await forge.publish(publication)
    fake_github.merge("acme", "repo", 1)
    commit_and_push(repo, name="more.txt")

    published = await forge.publish(replace(publication, title="More"))

    assert published.number == 2
    merged, new = fake_github.pulls("acme", "repo")
    assert merged.merged
    assert (new.state, new.title) == ("open", "More")


async def test_publishing_a_merged_branch_again_returns_the_merged_pull_request(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    first = await forge.publish(publication)
    fake_github.merge("acme", "repo", 1)

    again = await forge.publish(publication)  # e.g. a retry after a crash

    assert again == first
    assert len(fake_github.pulls("acme", "repo")) == 1


async def test_without_a_token_publish_says_so_and_calls_nobody(
    fake_github: FakeGitHub, publication: Publication
) -> None:
    forge = GitHubForge(token=None, api_url=fake_github.url)

    with pytest.raises(ForgeError) as caught:
        await forge.publish(publication)

    assert str(caught.value) == NO_TOKEN == "GITHUB_TOKEN is not set: cannot open a pull request"
    assert not caught.value.transient
    assert fake_github.requests == []


async def test_a_bad_token_is_a_permanent_error_that_does_not_show_the_token(
    fake_github: FakeGitHub, publication: Publication
) -> None:
    bad = "ghp_ThisIsTheWrongToken42"
    forge = make_forge(fake_github, token=bad)

    with pytest.raises(ForgeError) as caught:
        await forge.publish(publication)

    error = caught.value
    assert (error.status, error.transient) == (401, False)
    assert "Bad credentials" in str(error)
    assert "GITHUB_TOKEN" in str(error)
    assert bad not in str(error)
    assert bad not in repr(error.args)
    assert len(fake_github.api_requests()) == 1  # 4xx is final


async def test_an_unknown_repository_is_a_clear_permanent_error(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    with pytest.raises(ForgeError) as caught:
        await forge.publish(replace(publication, remote_url="/srv/git/acme/nope.git"))

    error = caught.value
    assert (error.status, error.transient) == (404, False)
    assert "/repos/acme/nope/pulls" in str(error)
    assert "Not Found" in str(error)
    assert "no such repository" in str(error)
    assert fake_github.token not in str(error)


async def test_a_refused_create_carries_githubs_reasons(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    with pytest.raises(ForgeError) as caught:
        await forge.publish(replace(publication, base="no-such-base"))

    error = caught.value
    assert (error.status, error.transient) == (422, False)
    assert "Validation Failed (base invalid)" in str(error)
    assert fake_github.pulls("acme", "repo") == []


async def test_server_errors_are_retried(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    fake_github.fail_next(502, count=2)

    published = await forge.publish(publication)

    assert published.number == 1
    assert [r.method for r in fake_github.api_requests()] == ["GET", "GET", "GET", "POST"]


async def test_dropped_connections_are_retried(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    fake_github.fail_next(disconnect=True)

    assert (await forge.publish(publication)).number == 1


async def test_server_errors_that_persist_are_transient_failures(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    fake_github.fail_next(503, count=3, message="Service Unavailable")

    with pytest.raises(ForgeError) as caught:
        await forge.publish(publication)

    assert (caught.value.status, caught.value.transient) == (503, True)
    assert "Service Unavailable" in str(caught.value)
    assert len(fake_github.api_requests()) == 3  # the first try and two retries


async def test_an_unreachable_api_is_a_transient_failure(publication: Publication) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    forge = GitHubForge(token="t", api_url=f"http://127.0.0.1:{port}", backoff=0.01)

    with pytest.raises(ForgeError) as caught:
        await forge.publish(publication)

    assert caught.value.transient
    assert caught.value.status is None


async def test_a_short_retry_after_is_waited_for(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    fake_github.fail_next(
        403, message="You have exceeded a secondary rate limit.", headers={"Retry-After": "0"}
    )

    assert (await forge.publish(publication)).number == 1
    assert len(fake_github.api_requests()) == 3


async def test_a_long_rate_limit_is_not_waited_out_here(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    reset = str(int(time.time()) + 3600)
    fake_github.fail_next(
        403,
        message="API rate limit exceeded for installation.",
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
    )

    started = time.monotonic()
    with pytest.raises(ForgeError) as caught:
        await forge.publish(publication)

    assert time.monotonic() - started < 1
    assert (caught.value.status, caught.value.transient) == (403, True)
    assert len(fake_github.api_requests()) == 1


async def test_an_injected_client_is_used_and_left_open(
    fake_github: FakeGitHub, publication: Publication
) -> None:
    async with httpx.AsyncClient() as client:
        forge = make_forge(fake_github, client=client)
        assert (await forge.publish(publication)).number == 1
        assert not client.is_closed


def test_github_forge_is_a_forge(forge: GitHubForge) -> None:
    typed: Forge = forge
    assert typed.name == "github"


# --- git over HTTP with the environment from git_env ----------------------------------------


def run_git(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, "GIT_TERMINAL_PROMPT": "0", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_git_env_authenticates_git_over_https_without_the_token_in_argv(
    forge: GitHubForge, fake_github: FakeGitHub, repo: GitRepo
) -> None:
    url = fake_github.git_url("acme", "repo")
    env = dict(forge.git_env(url))
    assert env["GIT_CONFIG_KEY_0"] == f"http.{fake_github.url}/.extraheader"

    anonymous = run_git("ls-remote", url, cwd=repo.path, env={})
    assert anonymous.returncode != 0

    argv = ["ls-remote", url]
    listed = run_git(*argv, cwd=repo.path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"refs/heads/{BRANCH}" in listed.stdout
    assert not any(fake_github.token in arg for arg in argv)

    repo.git("checkout", "-q", "-b", "telecoder/s2")
    (repo.path / "pushed.txt").write_text("over http\n")
    repo.git("add", "pushed.txt")
    repo.git("commit", "-q", "-m", "push over http")
    pushed = run_git("push", "-q", url, "telecoder/s2", cwd=repo.path, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert repo.remote_git("rev-parse", "telecoder/s2") == repo.git("rev-parse", "HEAD")


def test_git_env_with_a_wrong_token_is_refused(fake_github: FakeGitHub, repo: GitRepo) -> None:
    url = fake_github.git_url("acme", "repo")
    env = dict(make_forge(fake_github, token="ghp_wrong").git_env(url))

    result = run_git("ls-remote", url, cwd=repo.path, env=env)

    assert result.returncode != 0
    assert "ghp_wrong" not in result.stderr


# --- the fake itself: what channels will use ------------------------------------------------


async def test_the_fake_takes_comments_on_pull_requests(
    forge: GitHubForge, fake_github: FakeGitHub, publication: Publication
) -> None:
    published = await forge.publish(publication)
    headers = {"Authorization": f"Bearer {fake_github.token}"}
    path = f"/repos/acme/repo/issues/{published.number}/comments"
    async with httpx.AsyncClient(base_url=fake_github.url, headers=headers) as client:
        created = await client.post(path, json={"body": "Done: see the diff."})
        listed = await client.get(path)

    assert created.status_code == 201
    assert created.json()["html_url"].endswith("/acme/repo/pull/1#issuecomment-1")
    assert [c["body"] for c in listed.json()] == ["Done: see the diff."]
    assert [c.body for c in fake_github.comments("acme", "repo")] == ["Done: see the diff."]
