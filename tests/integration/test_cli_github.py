"""`telecoder run` through the GitHub forge, against the fake GitHub (REST + git over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo
from tests.fakes.github import TOKEN, FakeGitHub


@pytest.fixture
def hub_repo(git_repo: GitRepo, fake_github: FakeGitHub) -> GitRepo:
    """The user's checkout, whose origin is the fake GitHub serving the bare repository."""
    fake_github.add_repo("acme", "repo", git_dir=git_repo.remote)
    git_repo.git("remote", "set-url", "origin", fake_github.git_url("acme", "repo"))
    return git_repo


def hub_env(home: Path, fake_github: FakeGitHub) -> dict[str, str]:
    return cli_env(home, GITHUB_TOKEN=TOKEN, TELECODER_GITHUB_API_URL=fake_github.url)


def test_one_pull_request_also_after_a_retry(
    hub_repo: GitRepo, home: Path, fake_github: FakeGitHub
):
    env = hub_env(home, fake_github)
    done = telecoder(
        "run", "sed -i 's/colour/color/' README.md", "--repo", str(hub_repo.path), "--json",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "succeeded"
    pulls = fake_github.pulls("acme", "repo")
    assert len(pulls) == 1
    assert session["result"]["pr_url"] == pulls[0].to_json(fake_github.url)["html_url"]
    assert session["result"]["pr_number"] == pulls[0].number
    assert pulls[0].head == session["branch"]
    assert pulls[0].base == "main"
    assert pulls[0].title == "sed -i 's/colour/color/' README.md"

    again = telecoder("retry", session["id"], "--json", env=env)
    assert again.returncode == 0, again.stderr
    retried = json.loads(again.stdout)
    assert retried["result"]["pr_url"] == session["result"]["pr_url"]
    assert len(fake_github.pulls("acme", "repo")) == 1
    created = [r for r in fake_github.api_requests("POST") if r.path.endswith("/pulls")]
    assert len(created) == 1
    branch = session["branch"]
    assert len(hub_repo.remote_git("rev-list", f"main..{branch}").splitlines()) == 1

    # The token never shows: not in output, events, or the database.
    logs = telecoder("logs", session["id"], "--json", env=env)
    for text in (done.stdout, done.stderr, again.stdout, again.stderr, logs.stdout):
        assert TOKEN not in text
    assert TOKEN.encode() not in (home / "telecoder.db").read_bytes()


def test_github_outage_is_retried_without_a_second_pull_request(
    hub_repo: GitRepo, home: Path, fake_github: FakeGitHub
):
    fake_github.fail_next(502, count=3)  # more than the forge's own retries
    done = telecoder(
        "run", "echo more >> README.md", "--repo", str(hub_repo.path), "--json",
        env=hub_env(home, fake_github),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "succeeded"
    assert session["attempt"] == 2
    assert len(fake_github.pulls("acme", "repo")) == 1
    assert len(hub_repo.remote_git("rev-list", f"main..{session['branch']}").splitlines()) == 1


def test_missing_token_fails_with_a_clear_reason(
    hub_repo: GitRepo, home: Path, fake_github: FakeGitHub
):
    env = cli_env(home, TELECODER_GITHUB_API_URL=fake_github.url, TELECODER_FORGE="github")
    git_url = fake_github.git_url("acme", "repo")
    done = telecoder("run", "touch x", "--repo", git_url, "--json", env=env)
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]  # --json: the error is JSON on stdout
    assert error["code"] == "bad_input"
    assert "authentication required: set GITHUB_TOKEN" in error["message"]
    bare = telecoder("run", "touch x", "--repo", git_url, env=env)  # without: a line on stderr
    assert bare.returncode == 2
    assert "authentication required: set GITHUB_TOKEN" in bare.stderr
    assert json.loads(telecoder("list", "--json", env=env).stdout)["sessions"] == []


def test_repo_owner_slash_name_is_the_repository_on_github(
    hub_repo: GitRepo, home: Path, fake_github: FakeGitHub, tmp_path: Path
):
    done = telecoder(
        "run", "echo more >> README.md", "--repo", "acme/repo", "--json",
        env=hub_env(home, fake_github), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["repo"] == fake_github.git_url("acme", "repo")
    assert session["status"] == "succeeded", session.get("error")
    (pull,) = fake_github.pulls("acme", "repo")
    assert pull.head == session["branch"]
    missing = telecoder(
        "run", "true", "--repo", "acme/nothing", "--json",
        env=hub_env(home, fake_github), cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "acme/nothing" in missing.stderr + missing.stdout
