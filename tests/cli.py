"""Run the real ``telecoder`` command as a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TELECODER = str(Path(sys.executable).parent / "telecoder")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELECODER_", "GITHUB_"))}
    env.update({"TELECODER_HOME": str(home), "COLUMNS": "200"}, **extra)
    # The prompt runs as a shell command when a test names no engine (the operator's default);
    # a test that sets TELECODER_ENGINE chooses it (TELECODER_DEFAULT_ENGINE would win over it).
    if "TELECODER_ENGINE" not in extra:
        env.setdefault("TELECODER_DEFAULT_ENGINE", "shell")
    return env


def telecoder(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TELECODER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def session_json(session_id: str, env: dict[str, str]) -> dict[str, Any]:
    done = telecoder("show", session_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def wait_for(
    check: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(interval)


def start_serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``telecoder serve --no-workers ARGS`` in the background, its output in one text pipe."""
    return subprocess.Popen(
        [TELECODER, "serve", "--no-workers", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def until_serving(
    proc: subprocess.Popen[str],
    base: str,
    *,
    seconds: float = 30,
    statuses: tuple[int, ...] = (200,),
    what: str = "serve never answered /api/health",
) -> Any:
    """Wait until a ``telecoder serve`` process answers ``/api/health`` with one of ``statuses``
    (its output in the failure if it exits first); the health response."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            health = httpx.get(f"{base}/api/health")
            if health.status_code in statuses:
                return health
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def events_json(session_id: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """The session's events as ``telecoder logs --json`` prints them."""
    done = telecoder("logs", session_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]
