"""``telecoder serve`` as a process: it refuses an exposed bind without a token, and a graceful
shutdown hands the sessions its embedded worker runs back to the queue."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.cli import TELECODER
from tests.conftest import GitRepo

TOKEN = "serve-token-0123456789abcdef"


def serve_process(home: Path, host: str, port: int, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
    clean.update(
        TELECODER_HOME=str(home),
        TELECODER_POLL_SECONDS="0.1",
        TELECODER_HEARTBEAT_SECONDS="0.3",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
        **env,
    )
    return subprocess.Popen(
        [TELECODER, "serve", "--host", host, "--port", str(port)],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait(what: Callable[[], bool], seconds: float, proc: subprocess.Popen[str]) -> None:
    """Until ``what()`` holds; failing with the server's output if it exits first."""
    deadline = time.monotonic() + seconds
    while not what():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the server exited"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def workers_alive(url: str) -> bool:
    """Whether the server at ``url`` answers and its embedded workers run."""
    try:
        return bool(httpx.get(f"{url}/api/health").json()["workers"]["alive"] == 1)
    except httpx.HTTPError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_exposed_bind_without_a_token_refuses_to_start(home: Path):
    proc = serve_process(home, "0.0.0.0", free_port())
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an API token" in output
    assert not (home / "telecoder.db").exists()  # refused before anything was made


def test_sigterm_hands_the_running_session_back(home: Path, git_repo: GitRepo):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {TOKEN}"}
    proc = serve_process(home, "127.0.0.1", port, TELECODER_API_TOKEN=TOKEN)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/health").json()["workers"]["alive"] == 1:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout
            assert time.monotonic() < deadline
            time.sleep(0.1)
        created = httpx.post(
            f"{base}/api/sessions",
            json={
                "repo": str(git_repo.path),
                "prompt": "echo started; sleep 60",
                "engine": "shell",
            },
            headers=auth,
        ).json()
        sid = created["id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/api/sessions/{sid}", headers=auth).json()["status"] != "running":
            assert time.monotonic() < deadline, "the embedded worker never took the session"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output

    # The server is gone; the CLI reads the same database.
    from tests.cli import cli_env, session_json

    session = session_json(sid, cli_env(home))
    assert session["status"] == "queued", session  # handed back, for the next worker
    assert session["worker_id"] is None
