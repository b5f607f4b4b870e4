"""`telecoder wait ID...`: several sessions followed from the CLI until each ends."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import TELECODER, telecoder
from tests.conftest import GitRepo
from tests.procs import WorkerProcs, fast_env, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def detach(env: dict[str, str], repo: GitRepo, command: str) -> str:
    done = telecoder(
        "run", command, "--repo", str(repo.path), "--engine", "shell", "--detach", env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_wait_follows_several_sessions_and_exits_with_the_worst(
    home: Path, git_repo: GitRepo, worker_procs: WorkerProcs
):
    env = fast_env(home, TELECODER_MAX_ATTEMPTS="1")
    ok = detach(env, git_repo, "echo done > a.txt")
    bad = detach(env, git_repo, "exit 3")
    # Nothing runs them yet: --timeout gives up with exit 10; an unknown id is exit 3 at once.
    early = telecoder("wait", ok, "--timeout", "0.3", env=env)
    assert early.returncode == 10, early.stderr
    assert ok in early.stdout
    assert telecoder("wait", ok, "nosuchid", env=env).returncode == 3
    both = subprocess.Popen(
        [TELECODER, "wait", ok[:6], bad, "--json"], env=env, stdout=subprocess.PIPE, text=True
    )
    only_ok = subprocess.Popen([TELECODER, "wait", ok], env=env, stdout=subprocess.PIPE, text=True)
    worker_procs.start(env, "w1")
    out, _ = both.communicate(timeout=120)
    text, _ = only_ok.communicate(timeout=60)
    ended = {line["id"]: line["status"] for line in map(json.loads, out.splitlines())}
    assert ended == {ok: "succeeded", bad: "failed"}
    assert both.returncode == 1  # one failed
    assert only_ok.returncode == 0
    assert text.startswith(f"{ok} succeeded")
