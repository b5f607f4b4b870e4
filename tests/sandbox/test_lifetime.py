"""Nothing a session started survives its worker: a `telecoder worker` killed with SIGKILL
(no chance to clean up) takes its sandboxes' whole process trees with it — `setsid`, double
forks and `nohup` included. (Cancel, timeout and a normal end: test_escape.py and
test_engine_shell.py.)"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import telecoder, wait_for
from tests.conftest import GitRepo
from tests.processes import with_marker
from tests.procs import WorkerProcs, fast_env, worker_processes


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def test_a_killed_worker_leaves_no_process_of_its_sessions(
    git_repo: GitRepo, home: Path, worker_procs: WorkerProcs
) -> None:
    env = fast_env(home)
    marker = f"90.{time.time_ns() % 10**9:09d}"
    agent = (
        f"setsid sleep {marker} & (sleep {marker} &); nohup sleep {marker} >/dev/null 2>&1 & "
        f"exec sleep {marker}"
    )
    done = telecoder("run", agent, "--repo", str(git_repo.path), "--detach", env=env)
    assert done.returncode == 0, done.stderr
    worker = worker_procs.start(env, "worker-a")
    wait_for(lambda: len(with_marker(marker)) >= 4, timeout=30, what="the agent's processes")
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its sandboxes are not its group
    worker.wait(10)
    deadline = time.monotonic() + 3
    while left := with_marker(marker):
        assert time.monotonic() < deadline, f"still running after the worker died: {left}"
        time.sleep(0.05)
