"""`telecoder run --attempts` and `telecoder best-of show|pick` as a user runs them: the CLI as
a subprocess, a real repository and its bare remote, the shell engine, the local forge."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import cli_env, telecoder, wait_for
from tests.conftest import GitRepo, make_repo
from tests.fakes.github import TOKEN, FakeGitHub
from tests.procs import WorkerProcs, events, fast_env, show, worker_processes


def test_best_of_two_here_then_show_and_pick(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    bad = telecoder(
        "run", "echo x", "--repo", str(git_repo.path), "--engine", "shell", "--attempts", "1",
        env=env,
    )  # fmt: skip
    done = telecoder(
        "run", "echo more >> README.md", "--repo", str(git_repo.path), "--engine", "shell",
        "--attempts", "2", "--json", env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert "2 to 10" in bad.stderr
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["run"]["kind"] == "best_of"
    assert data["run"]["status"] == "succeeded"
    first, second = sorted(data["candidates"], key=lambda c: c["session"]["task_key"])
    assert first["passed"]
    assert second["passed"]
    verdict = data["verdict"]
    assert "smallest passing diff wins" in verdict["reasons"]
    for c in (first, second):  # both branches pushed, kept
        branch = c["session"]["branch"]
        assert git_repo.remote_git("show", f"{branch}:README.md").endswith("more")
    run_id = data["run"]["id"]

    shown = telecoder("best-of", "show", run_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"winner: {verdict['winner']}" in shown.stdout
    listed = telecoder("runs", "show", run_id, env=env)  # the verdict there too
    assert listed.returncode == 0, listed.stderr
    assert f"winner: {verdict['winner']}" in listed.stdout
    assert "smallest passing diff wins" in listed.stdout
    other = next(
        c["session"]["id"] for c in (first, second) if c["session"]["id"] != verdict["winner"]
    )
    picked = telecoder("best-of", "pick", run_id, other, "--json", env=env)
    assert picked.returncode == 0, picked.stderr
    after = json.loads(picked.stdout)["verdict"]
    assert (after["winner"], after["picked"]) == (other, True)
    assert after["previous"]["winner"] == verdict["winner"]

    stranger = telecoder("best-of", "pick", run_id, "nosuchsession", env=env)
    missing = telecoder("best-of", "show", "run_nosuchrun1", env=env)
    assert stranger.returncode == 2, stranger.stderr
    assert missing.returncode == 3, missing.stderr


def test_detached_candidates_are_left_to_the_workers(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    done = telecoder(
        "run", "echo more >> README.md", "--repo", str(git_repo.path),
        "--engines", "shell,shell,shell", "--detach", "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert len(data["candidates"]) == 3
    assert {c["session"]["status"] for c in data["candidates"]} == {"queued"}
    assert data["verdict"] is None


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def test_three_worker_processes_judge_a_detached_run_once(
    tmp_path: Path, home: Path, db_url: str, fake_github: FakeGitHub, worker_procs: WorkerProcs
):
    repo = make_repo(tmp_path, files={"README.md": "hello\n"})
    fake_github.add_repo("acme", "repo", git_dir=repo.remote)
    env = fast_env(
        home, db_url, TELECODER_FORGE="github", TELECODER_GITHUB_TOKEN=TOKEN,
        TELECODER_GITHUB_API_URL=fake_github.url,
    )  # fmt: skip
    done = telecoder(
        "run", "echo more >> README.md", "--repo", fake_github.git_url("acme", "repo"),
        "--engine", "shell", "--attempts", "3", "--detach", "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run"]["id"]
    for name in ("w1", "w2", "w3"):
        worker_procs.start(env, name)

    def decided() -> dict[str, Any] | None:
        shown = telecoder("best-of", "show", run_id, "--json", env=env)
        data: dict[str, Any] = json.loads(shown.stdout)
        verdict = data["verdict"]
        return data if verdict and verdict.get("state") == "decided" else None

    data = wait_for(decided, timeout=60, interval=0.3, what="the verdict")
    time.sleep(1.0)  # (the other workers' upkeep had its chance to judge again)
    verdict = data["verdict"]
    assert verdict["by"] == "judge"
    (pull,) = fake_github.pulls("acme", "repo")
    winner = next(
        c["session"] for c in data["candidates"] if c["session"]["id"] == verdict["winner"]
    )
    assert pull.head == winner["branch"]
    chosen = [e for e in events(winner["id"], env) if e["data"].get("step") == "chosen"]
    assert len(chosen) == 1
    # The candidates ran on the worker processes.
    ran_on = {
        a["worker_id"]
        for c in data["candidates"]
        for a in show(c["session"]["id"], env)["attempts"]
    }
    assert ran_on <= {"w1", "w2", "w3"}
