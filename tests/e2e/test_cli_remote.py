"""The CLI as a client: ``telecoder … --server URL`` against ``telecoder serve`` as a process.

The client runs with its own, empty ``TELECODER_HOME``: everything it prints comes over HTTP.
Where the output can be compared, it is compared with what the local CLI prints reading the
server's own database.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli import TELECODER, cli_env, telecoder, wait_for
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port, serve_process
from tests.fakes.model_server import FakeModelServer

TOKEN = "remote-token-0123456789abcdef"
pytestmark = pytest.mark.timeout(120)


@dataclass
class Server:
    url: str
    home: Path
    proc: subprocess.Popen[str]

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
        response = httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def status(self, session_id: str) -> str:
        return str(self.api("GET", f"/api/sessions/{session_id}")["status"])


def start(home: Path, port: int) -> subprocess.Popen[str]:
    proc = serve_process(home, "127.0.0.1", port, TELECODER_API_TOKEN=f"laptop:{TOKEN}")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            return bool(httpx.get(f"{base}/api/health").json()["workers"]["alive"] == 1)
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, what="telecoder serve to start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "server-home"
    home.mkdir()
    port = free_port()
    running = Server(url=f"http://127.0.0.1:{port}", home=home, proc=start(home, port))
    try:
        yield running
    finally:
        stop(running.proc)  # the one running now: a test may have restarted it


@pytest.fixture
def client_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "client-home"
    home.mkdir()
    yield home
    assert not (home / "telecoder.db").exists(), "the client opened a local database"


@pytest.fixture
def env(server: Server, client_home: Path) -> dict[str, str]:
    return cli_env(client_home, TELECODER_SERVER=server.url, TELECODER_TOKEN=TOKEN)


def local(server: Server) -> dict[str, str]:
    """The local CLI on the server's database, to compare outputs with."""
    return cli_env(server.home)


def test_run_streams_the_session_to_its_end_and_pushes_the_branch(
    server: Server, env: dict[str, str], git_repo: GitRepo
):
    done = telecoder(
        "run", "echo from-afar > remote.txt; echo wrote it", "--repo", str(git_repo.path),
        "--engine", "shell", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session_id = done.stderr.split("session ", 1)[1].split()[0]
    branch = f"telecoder/{session_id}"
    assert f"branch {branch}" in done.stderr
    assert "│ wrote it" in done.stdout  # the engine's output, streamed over SSE
    assert f"succeeded · pushed {branch}" in done.stdout
    assert git_repo.remote_git("show", f"{branch}:remote.txt") == "from-afar"
    # The stream printed what `logs` prints locally, line for line.
    logs = telecoder("logs", session_id, env=local(server))
    assert logs.stdout in done.stdout


def test_run_json_prints_the_finished_session_as_the_api_has_it(
    server: Server, env: dict[str, str], git_repo: GitRepo
):
    done = telecoder(
        "run", "exit 3", "--repo", str(git_repo.path), "--engine", "shell", "--json", env=env
    )
    assert done.returncode == 1, done.stderr  # the session failed
    printed = json.loads(done.stdout)
    assert printed["status"] in ("failed", "dead")
    assert printed == server.api("GET", f"/api/sessions/{printed['id']}")


def test_detach_then_logs_follow(server: Server, env: dict[str, str], git_repo: GitRepo):
    done = telecoder(
        "run", "for i in 1 2 3; do echo tick $i; sleep 0.3; done", "--repo", str(git_repo.path),
        "--engine", "shell", "--detach", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    assert len(session_id) == 10

    followed = telecoder("logs", session_id, "-f", "--json", env=env)
    assert followed.returncode == 0, followed.stderr
    assert server.status(session_id) == "succeeded"  # -f returned once it ended
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    page = server.api(
        "GET", f"/api/sessions/{session_id}/events", headers={"accept": "application/json"}
    )
    assert lines == page["events"]
    assert [e["data"]["text"] for e in lines if e["kind"] == "output"] == [
        "tick 1", "tick 2", "tick 3",
    ]  # fmt: skip

    # Without -f: the recorded events, as the local CLI prints them.
    remote_text = telecoder("logs", session_id[:6], env=env)
    local_text = telecoder("logs", session_id, env=local(server))
    assert remote_text.returncode == 0, remote_text.stderr
    assert remote_text.stdout == local_text.stdout
    assert "tick 3" in remote_text.stdout


def test_list_and_show_print_what_the_api_returns(
    server: Server, env: dict[str, str], git_repo: GitRepo
):
    ids = []
    for prompt in ("true", "echo two"):
        done = telecoder(
            "run", prompt, "--repo", str(git_repo.path), "--engine", "shell", "-d", env=env
        )
        ids.append(done.stdout.strip())
    for session_id in ids:
        wait_for(lambda sid=session_id: server.status(sid) == "succeeded", what="the sessions")

    listed = telecoder("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == server.api("GET", "/api/sessions")  # the API's page
    assert [s["id"] for s in json.loads(listed.stdout)["sessions"]] == ids[::-1]
    limited = telecoder("list", "--json", "--limit", "1", "--status", "succeeded", env=env)
    page = json.loads(limited.stdout)
    assert [s["id"] for s in page["sessions"]] == ids[1:]
    assert page["next_cursor"]  # more exist: the next page, as the API pages
    rest = telecoder("list", "--json", "--limit", "1", "--cursor", page["next_cursor"], env=env)
    assert [s["id"] for s in json.loads(rest.stdout)["sessions"]] == ids[:1]

    shown = telecoder("show", ids[0], "--json", env=env)
    assert json.loads(shown.stdout) == server.api("GET", f"/api/sessions/{ids[0]}")
    assert shown.stdout == telecoder("show", ids[0], "--json", env=local(server)).stdout

    def without_age(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("created")]

    human = telecoder("show", ids[0], env=env)
    assert without_age(human.stdout) == without_age(
        telecoder("show", ids[0], env=local(server)).stdout
    )
    table = telecoder("list", env=env)
    assert ids[0] in table.stdout
    assert table.stdout.splitlines()[0].split() == [
        "ID", "STATUS", "ENGINE", "AGE", "REPO", "PROMPT", "RESULT",
    ]  # fmt: skip


def test_cancel_and_retry(server: Server, env: dict[str, str], git_repo: GitRepo):
    queued = telecoder(
        "run", "echo started; sleep 60", "--repo", str(git_repo.path), "--engine", "shell",
        "--detach", env=env,
    )  # fmt: skip
    session_id = queued.stdout.strip()
    wait_for(lambda: server.status(session_id) == "running", what="the session to run")

    cancelled = telecoder("cancel", session_id, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(session_id)
    wait_for(lambda: server.status(session_id) == "cancelled", what="the cancel")

    again = telecoder("cancel", session_id, env=env)
    assert again.returncode == 4
    assert again.stderr.startswith("error: ")
    assert "cancelled" in again.stderr

    retried = telecoder("retry", session_id, "--detach", "--json", env=env)
    assert retried.returncode == 0, retried.stderr
    new = json.loads(retried.stdout)
    assert new["parent_id"] == session_id
    assert new["branch"] == f"telecoder/{session_id}"
    assert new["prompt"] == server.api("GET", f"/api/sessions/{new['id']}")["prompt"]
    stopped = telecoder("cancel", new["id"], "--json", env=env)
    assert json.loads(stopped.stdout)["id"] == new["id"]


def test_ctrl_c_cancels_a_streamed_run(server: Server, env: dict[str, str], git_repo: GitRepo):
    proc = subprocess.Popen(
        [TELECODER, "run", "echo started; sleep 60", "--repo", str(git_repo.path),
         "--engine", "shell"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:  # streamed: the engine's line arrives while it runs
            if "│ started" in line:
                break
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        out, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, errors
    assert "cancelled" in out
    session_id = errors.split("session ", 1)[1].split()[0]
    assert server.status(session_id) == "cancelled"


def test_the_stream_survives_a_server_restart(
    server: Server, env: dict[str, str], git_repo: GitRepo
):
    # The agent sleeps long enough for the restart to catch it even when the stream reaches
    # the client seconds late (a busy machine): the session must need its second attempt.
    proc = subprocess.Popen(
        [TELECODER, "run", "echo first; sleep 8; echo second > second.txt; echo second",
         "--repo", str(git_repo.path), "--engine", "shell"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "│ first" in line:
                break
        stop(server.proc)  # hands the session back to the queue
        server.proc = start(server.home, int(server.url.rsplit(":", 1)[1]))
        out, errors = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, errors
    assert "│ second" in out
    assert "succeeded · pushed" in out
    # The second attempt's (the first attempt's was read above): the replay after
    # reconnecting repeated nothing.
    assert out.count("│ first") == 1
    assert out.count("│ second") == 1


def test_bad_input_is_exit_2_with_the_servers_message(
    server: Server, env: dict[str, str], tmp_path: Path, git_repo: GitRepo
):
    missing = telecoder("run", "true", "--repo", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2
    lines = missing.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "nowhere" in lines[0]

    blank = telecoder("run", "   ", "--repo", str(git_repo.path), env=env)
    assert blank.returncode == 2
    assert blank.stderr.strip() == "error: invalid request: prompt: Value error, must not be blank"

    unknown = telecoder("show", "zzzzzzzzzz", env=env)
    assert unknown.returncode == 3
    assert unknown.stderr.startswith("error: ")
    assert server.api("GET", "/api/sessions")["sessions"] == []  # nothing was queued


def test_a_wrong_token_is_exit_7_and_never_printed(
    server: Server, client_home: Path, git_repo: GitRepo
):
    wrong = "not-the-token-9876543210"
    env = cli_env(client_home, TELECODER_SERVER=server.url, TELECODER_TOKEN=wrong)
    for args in (("list",), ("run", "true", "--repo", str(git_repo.path)), ("logs", "x", "-f")):
        done = telecoder(*args, env=env)
        assert done.returncode == 7, (args, done.stderr)
        assert done.stderr == "error: the server refused the request: invalid API token\n"
        assert wrong not in done.stdout + done.stderr
    without = telecoder("list", env={k: v for k, v in env.items() if k != "TELECODER_TOKEN"})
    assert without.returncode == 7
    assert without.stderr.startswith("error: the server refused the request")


def test_no_server_is_exit_6(client_home: Path):
    url = f"http://127.0.0.1:{free_port()}"
    env = cli_env(client_home, TELECODER_TOKEN=TOKEN)
    for args in (("list",), ("show", "abc"), ("run", "true", "--repo", "."), ("logs", "a", "-f")):
        done = telecoder(*args, "--server", url, env=env, timeout=30)
        assert done.returncode == 6, (args, done.stderr)
        assert done.stderr.startswith(f"error: cannot reach the server at {url}")
        assert TOKEN not in done.stderr

    not_a_url = telecoder("list", "--server", "127.0.0.1:7080", env=env)
    assert not_a_url.returncode == 2
    assert "http://" in not_a_url.stderr


def test_endpoints_over_the_server(server: Server, env: dict[str, str]):
    with FakeModelServer() as upstream:
        added = telecoder(
            "endpoints", "add", "a-2", upstream.url, "--kind", "anthropic", "--json", env=env
        )
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["source"] == "registered"
        assert telecoder("endpoints", "add", "a-2", upstream.url, "--kind", "anthropic",
                         env=env).returncode == 4  # fmt: skip
        checked = telecoder("endpoints", "check", "a-2", "--json", env=env)
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)[0]["models"] == ["fake-model"]
        listed = telecoder("endpoints", "list", "--json", env=env)
        assert [e["name"] for e in json.loads(listed.stdout)] == ["a-2"]
        # The same as the local CLI reads from the server's database.
        here = telecoder("endpoints", "list", "--json", env=local(server))
        assert json.loads(here.stdout) == json.loads(listed.stdout)
        assert telecoder("endpoints", "check", "nope", env=env).returncode == 3
        assert telecoder("endpoints", "remove", "a-2", env=env).returncode == 0
        assert telecoder("endpoints", "remove", "a-2", env=env).returncode == 3
