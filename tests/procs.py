"""`telecoder worker` processes for tests: start, pause, kill, stop — and always clean up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.cli import TELECODER, cli_env, telecoder


class WorkerProcs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str], name: str, **extra: str) -> subprocess.Popen[bytes]:
        home = Path(env["TELECODER_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        with (home / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [TELECODER, "worker"],
                env={**env, "TELECODER_WORKER_ID": name, **extra},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and everything in its process group (git included)."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)


def worker_processes() -> Iterator[WorkerProcs]:
    """The body of a ``worker_procs`` fixture: every process is killed at teardown."""
    procs = WorkerProcs()
    yield procs
    procs.close()


def fast_env(home: Path, db_url: str | None = None, **extra: str) -> dict[str, str]:
    """Short leases and quick polls; the database at ``db_url`` (default SQLite in home)."""
    env = cli_env(
        home,
        TELECODER_LEASE_SECONDS="2",
        TELECODER_HEARTBEAT_SECONDS="0.3",
        TELECODER_POLL_SECONDS="0.1",
        **extra,
    )
    if db_url is not None:
        env["TELECODER_DATABASE_URL"] = db_url
    return env


def show(session_id: str, env: dict[str, str]) -> dict[str, Any]:
    done = telecoder("show", session_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def events(session_id: str, env: dict[str, str]) -> list[dict[str, Any]]:
    done = telecoder("logs", session_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
