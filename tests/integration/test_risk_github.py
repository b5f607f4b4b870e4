"""Risk tiers through the GitHub forge, against the fake GitHub: every pull request TeleCoder
opens is labelled with its tier, which the outcome also names; with ``auto_merge: low`` a
low-risk pull request whose checks passed merges itself, and nothing else does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo, make_repo
from tests.fakes.github import TOKEN, FakeGitHub


def hub_repo(tmp_path: Path, fake: FakeGitHub, config: str | None) -> GitRepo:
    files = {"README.md": "The colour of magic.\n"}
    if config is not None:
        files[".telecoder.yml"] = config
    repo = make_repo(tmp_path, "repo", files)
    fake.add_repo("acme", "repo", git_dir=repo.remote)
    repo.git("remote", "set-url", "origin", fake.git_url("acme", "repo"))
    return repo


def run(repo: GitRepo, home: Path, fake: FakeGitHub, prompt: str) -> dict[str, Any]:
    env = cli_env(home, GITHUB_TOKEN=TOKEN, TELECODER_GITHUB_API_URL=fake.url)
    done = telecoder("run", prompt, "--engine", "shell", "--repo", str(repo.path), "--json",
                     env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    session: dict[str, Any] = json.loads(done.stdout)
    assert session["status"] == "succeeded", session.get("error")
    return session


def test_a_one_line_docs_change_is_labelled_low_and_waits_for_a_person(
    tmp_path: Path, home: Path, fake_github: FakeGitHub
) -> None:
    repo = hub_repo(tmp_path, fake_github, 'verify: ["true"]\n')  # auto_merge: off
    session = run(repo, home, fake_github, "echo more >> README.md")
    (pull,) = fake_github.pulls("acme", "repo")
    assert pull.labels == ["risk:low"]
    assert (pull.state, pull.merged) == ("open", False)
    risk = session["result"]["risk"]
    assert (risk["tier"], risk["label"]) == ("low", "risk:low")
    assert "merged" not in risk
    assert session["outcome"]["risk"] == risk
    shown = telecoder("show", session["id"], env=cli_env(home))
    assert "low — a small change with nothing sensitive" in shown.stdout


def test_a_workflow_change_is_labelled_high_and_does_not_merge_itself(
    tmp_path: Path, home: Path, fake_github: FakeGitHub
) -> None:
    repo = hub_repo(tmp_path, fake_github, 'verify: ["true"]\nauto_merge: low\n')
    prompt = "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/ci.yml"
    session = run(repo, home, fake_github, prompt)
    (pull,) = fake_github.pulls("acme", "repo")
    assert pull.labels == ["risk:high"]
    assert not pull.merged
    risk = session["result"]["risk"]
    assert risk["tier"] == "high"
    assert risk["reasons"] == ["CI configuration: .github/workflows/ci.yml"]
    assert (risk["merged"], risk["not_merged"]) == (False, "its risk is high")


def test_a_low_risk_pull_request_with_passing_checks_merges_itself_when_enabled(
    tmp_path: Path, home: Path, fake_github: FakeGitHub
) -> None:
    repo = hub_repo(tmp_path, fake_github, 'verify: ["true"]\nauto_merge: low\n')
    session = run(repo, home, fake_github, "echo more >> README.md")
    (pull,) = fake_github.pulls("acme", "repo")
    assert pull.labels == ["risk:low"]
    assert (pull.state, pull.merged) == ("closed", True)
    assert session["result"]["risk"]["merged"] is True
    merge = [r for r in fake_github.api_requests("PUT") if r.path.endswith("/merge")]
    assert [r.json for r in merge] == [{"sha": session["result"]["commit"]}]
    assert "more" in repo.remote_git("show", "main:README.md")


def test_without_checks_a_low_risk_pull_request_does_not_merge_itself(
    tmp_path: Path, home: Path, fake_github: FakeGitHub
) -> None:
    repo = hub_repo(tmp_path, fake_github, "auto_merge: low\n")
    session = run(repo, home, fake_github, "echo more >> README.md")
    (pull,) = fake_github.pulls("acme", "repo")
    assert (pull.labels, pull.merged) == (["risk:low"], False)
    assert session["result"]["risk"]["not_merged"] == "no check passed"
    assert fake_github.api_requests("PUT") == []
