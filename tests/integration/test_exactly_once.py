"""Exactly-once effects across crashes: a worker killed right after its push, or while GitHub
opens its pull request; the next attempt pushes nothing new and opens no second PR, and the
pushed sha is recorded once, with the completion."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import telecoder, wait_for
from tests.conftest import GitRepo
from tests.fakes.github import TOKEN, FakeGitHub
from tests.procs import WorkerProcs, events, fast_env, show, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def steps(session_id: str, env: dict[str, str], attempt: int) -> list[str]:
    return [
        e["data"]["step"]
        for e in events(session_id, env)
        if e["kind"] == "progress" and e["attempt"] == attempt
    ]


def test_killed_right_after_the_push(git_repo: GitRepo, home: Path, worker_procs: WorkerProcs):
    env = fast_env(home)
    git_repo.remote_git("config", "core.logAllRefUpdates", "always")  # count the ref updates
    victim = home / "victim.pid"
    hook = git_repo.remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\n[ -f {victim} ] && kill -9 $(cat {victim}) && rm {victim}\n")
    hook.chmod(0o755)
    a = worker_procs.start(env, "worker-a")
    victim.write_text(str(a.pid))
    sid = telecoder(
        "run", "echo fixed > bug.txt", "--repo", str(git_repo.path), "--detach", env=env
    ).stdout.strip()
    assert a.wait(90) == -signal.SIGKILL  # killed by the remote, just after the push
    branch = show(sid, env)["branch"]
    pushed = git_repo.remote_git("rev-parse", branch)

    worker_procs.start(env, "worker-b")
    final = wait_for(lambda: (s := show(sid, env))["finished_at"] and s, timeout=40)
    assert final["status"] == "succeeded"
    assert final["result"]["commit"] == pushed
    assert git_repo.remote_git("rev-list", f"main..{branch}").splitlines() == [pushed]
    assert len(git_repo.remote_git("reflog", "show", branch).splitlines()) == 1  # pushed once
    first, second = final["attempts"]
    assert (first["status"], first["interrupted"], first["pushed_sha"]) == ("lost", "crashed", None)
    assert (second["status"], second["pushed_sha"]) == ("succeeded", pushed)
    assert "already_pushed" in steps(sid, env, 2)
    assert "pushed" not in steps(sid, env, 2)


def test_killed_while_opening_the_pull_request(
    git_repo: GitRepo, home: Path, fake_github: FakeGitHub, worker_procs: WorkerProcs
):
    fake_github.add_repo("acme", "repo", git_dir=git_repo.remote)
    git_repo.git("remote", "set-url", "origin", fake_github.git_url("acme", "repo"))
    env = fast_env(home, GITHUB_TOKEN=TOKEN, TELECODER_GITHUB_API_URL=fake_github.url)
    a = worker_procs.start(env, "worker-a")
    fake_github.before_next("POST", "/repos/acme/repo/pulls", lambda: os.kill(a.pid, 9))
    sid = telecoder(
        "run", "echo fixed > bug.txt", "--repo", str(git_repo.path), "--detach", env=env
    ).stdout.strip()
    assert a.wait(90) == -signal.SIGKILL  # a loaded CI machine starts a worker slowly
    # The request was on its way: GitHub opened the pull request, the worker never heard.
    assert len(fake_github.pulls("acme", "repo")) == 1
    assert show(sid, env)["status"] == "running"

    worker_procs.start(env, "worker-b")
    final = wait_for(lambda: (s := show(sid, env))["finished_at"] and s, timeout=40)
    assert final["status"] == "succeeded"
    opened = [r for r in fake_github.api_requests("POST") if r.path.endswith("/pulls")]
    assert len(opened) == 1  # one pull request made (its risk label is another POST)
    (pull,) = fake_github.pulls("acme", "repo")
    assert pull.head == final["branch"]
    assert final["result"]["pr_number"] == pull.number
    commits = git_repo.remote_git("rev-list", f"main..{final['branch']}").splitlines()
    assert commits == [final["result"]["commit"]]
    assert "already_pushed" in steps(sid, env, 2)


def test_killed_right_after_pushing_the_failed_work(
    git_repo: GitRepo, home: Path, worker_procs: WorkerProcs
):
    (git_repo.path / ".telecoder.yml").write_text("verify:\n  - exit 1\n")
    git_repo.git("add", "-A")
    git_repo.git("commit", "-q", "-m", "checks that fail")
    git_repo.git("push", "-q", "origin", "main")
    env = fast_env(home, TELECODER_PUSH_FAILED="true")
    git_repo.remote_git("config", "core.logAllRefUpdates", "always")  # count the ref updates
    victim = home / "victim.pid"
    hook = git_repo.remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\n[ -f {victim} ] && kill -9 $(cat {victim}) && rm {victim}\n")
    hook.chmod(0o755)
    a = worker_procs.start(env, "worker-a")
    victim.write_text(str(a.pid))
    sid = telecoder(
        "run", "echo tried > bug.txt", "--repo", str(git_repo.path), "--detach", env=env
    ).stdout.strip()
    assert a.wait(90) == -signal.SIGKILL  # killed by the remote, just after the push
    ref = f"telecoder/{sid}-failed"
    pushed = git_repo.remote_git("rev-parse", ref)

    worker_procs.start(env, "worker-b")
    final = wait_for(lambda: (s := show(sid, env))["finished_at"] and s, timeout=40)
    assert (final["status"], final["failure_kind"]) == ("failed", "verify_failed")
    assert final["result"]["failed_ref"] == ref
    assert git_repo.remote_git("rev-list", f"main..{ref}").splitlines() == [pushed]
    assert len(git_repo.remote_git("reflog", "show", ref).splitlines()) == 1  # pushed once
    assert git_repo.remote_git("branch", "--list", "telecoder/*").split() == [ref]
    assert "failed_already_pushed" in steps(sid, env, 2)
    assert "failed_pushed" not in steps(sid, env, 2)
