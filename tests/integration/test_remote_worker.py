"""``telecoder worker --server URL``: a worker on another host runs a real ``telecoder serve``'s
sessions through the API, with a worker token and no database settings of the server's; a
SIGKILLed one's session is requeued after its lease and finished by another; a SIGTERMed one
hands its session back at once; a refused token stops it with exit 7."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telecoder.cli.exits import Exit
from tests.cli import TELECODER, start_serve, telecoder, until_serving, wait_for
from tests.conftest import GitRepo
from tests.integration.test_cli_status import free_port
from tests.procs import WorkerProcs, fast_env, worker_processes

ADMIN = "remote-worker-admin-0123456789"


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


class Server:
    def __init__(
        self, root: Path, db_url: str | None, *, port: int | None = None, **extra: str
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = fast_env(
            root / "server",
            db_url,
            TELECODER_API_TOKEN=ADMIN,
            TELECODER_PORT=str(self.port),
            TELECODER_RETRY_BACKOFF_SECONDS="0.1",
        )
        self.env.update(extra)
        self.admin = {"authorization": f"Bearer {ADMIN}"}
        self.proc = start_serve(self.env)
        try:
            until_serving(self.proc, self.url, statuses=(200, 503))
        except BaseException:  # not serving: no one else will stop it
            self.proc.kill()
            self.proc.communicate(timeout=30)
            raise

    def worker_token(self) -> str:
        made = telecoder("tokens", "create", "--role", "worker", env=self.env)
        assert made.returncode == 0, made.stderr
        return made.stdout.splitlines()[-1]

    def submit(self, repo: GitRepo, command: str) -> str:
        body = {"repo": str(repo.path), "prompt": command, "engine": "shell"}
        made = httpx.post(f"{self.url}/api/sessions", json=body, headers=self.admin)
        assert made.status_code in (200, 201), made.text
        return str(made.json()["id"])

    def session(self, session_id: str) -> dict[str, Any]:
        got = httpx.get(f"{self.url}/api/sessions/{session_id}", headers=self.admin)
        assert got.status_code == 200, got.text
        data: dict[str, Any] = got.json()
        return data

    def events(self, session_id: str) -> list[dict[str, Any]]:
        headers = {**self.admin, "accept": "application/json"}
        got = httpx.get(f"{self.url}/api/sessions/{session_id}/events", headers=headers)
        assert got.status_code == 200, got.text
        found: list[dict[str, Any]] = got.json()["events"]
        return found

    def until(self, session_id: str, *statuses: str, timeout: float = 90) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.session(session_id))["status"] in statuses and s,
            timeout=timeout,
            interval=0.2,
            what=f"{session_id} {'/'.join(statuses)}",
        )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


def far_env(root: Path, name: str, server: Server | str, token: str) -> dict[str, str]:
    """A worker host's environment: its own home, the server's URL and a worker token, and
    nothing of the server's database."""
    url = server if isinstance(server, str) else server.url
    env = fast_env(root / name, TELECODER_SERVER=url, TELECODER_TOKEN=token)
    assert not any(k.startswith("TELECODER_DATABASE") for k in env)
    assert str(root / "server") not in "".join(env.values())
    return env


def running_on(server: Server, session_id: str, worker: str) -> bool:
    s = server.session(session_id)
    return s["status"] == "running" and s["worker_id"] == worker


def log_of(env: dict[str, str], name: str) -> str:
    return (Path(env["TELECODER_HOME"]) / f"{name}.log").read_text()


def test_a_remote_worker_runs_a_session_and_its_token_does_nothing_else(
    tmp_path: Path,
    db_url: str,
    git_repo: GitRepo,
    worker_procs: WorkerProcs,
    servers: list[Server],
) -> None:
    server = Server(tmp_path, db_url)
    servers.append(server)
    token = server.worker_token()
    env = far_env(tmp_path, "far", server, token)
    sid = server.submit(git_repo, "echo remote-was-here > remote.txt && echo said-hello")
    worker_procs.start(env, "far-1")
    done = server.until(sid, "succeeded", "failed", "dead")
    assert done["status"] == "succeeded", log_of(env, "far-1")
    assert [a["worker_id"] for a in done["attempts"]] == ["far-1"]
    assert done["result"]["files_changed"] >= 1 or done["result"]["commit"], done["result"]
    events = server.events(sid)
    kinds = [e["kind"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # in order, no gap
    assert any("said-hello" in str(e["data"]) for e in events), kinds
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses[0] == "queued"
    assert statuses[-1] == "succeeded"
    assert statuses.count("running") == 1  # the server's own; the scratch one is not sent
    # The host reported itself: CPU, RAM and its engines.
    workers = httpx.get(f"{server.url}/api/workers", headers=server.admin).json()
    far = next(w for w in workers if w["id"] == "far-1")
    assert far["host_stats"]["cpu_count"] == os.cpu_count()
    assert far["host_stats"]["mem_total"] > 0
    assert "shell" in far["engines"]
    # The worker token: the worker endpoints and nothing else.
    bearer = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/api/sessions", headers=bearer).status_code == 403
    body = {"repo": str(git_repo.path), "prompt": "x", "engine": "shell"}
    refused = httpx.post(f"{server.url}/api/sessions", json=body, headers=bearer)
    assert refused.status_code == 403


def test_sigkill_requeues_after_the_lease_and_another_worker_finishes(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    token = server.worker_token()
    sid = server.submit(git_repo, "sleep 3 && echo finished > slow.txt")
    first_env = far_env(tmp_path, "far-a", server, token)
    first = worker_procs.start(first_env, "far-a")
    wait_for(lambda: running_on(server, sid, "far-a"), timeout=60, what="far-a runs it")
    wait_for(
        lambda: any(e["kind"] == "progress" for e in server.events(sid)),
        timeout=30,
        what="the attempt's events",
    )
    WorkerProcs.kill(first)
    second_env = far_env(tmp_path, "far-b", server, server.worker_token())
    worker_procs.start(second_env, "far-b")
    done = server.until(sid, "succeeded", "failed", "dead")
    assert done["status"] == "succeeded", log_of(second_env, "far-b")
    attempts = done["attempts"]
    assert [(a["worker_id"], a["status"]) for a in attempts] == [
        ("far-a", "lost"),
        ("far-b", "succeeded"),
    ]
    lost = [e for e in server.events(sid) if e["data"].get("interrupted") == "crashed"]
    assert lost, "the server recorded the lost lease"


def test_sigterm_hands_the_session_back_at_once(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    # A long lease: only a release requeues the session within the test's time.
    server = Server(tmp_path, None, TELECODER_LEASE_SECONDS="120")
    servers.append(server)
    sid = server.submit(git_repo, "sleep 60")
    env = far_env(tmp_path, "far-t", server, server.worker_token())
    proc = worker_procs.start(env, "far-t")
    wait_for(lambda: running_on(server, sid, "far-t"), timeout=60, what="far-t runs it")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log_of(env, "far-t")
    back = server.session(sid)
    assert back["status"] == "queued"
    assert back["attempts"][-1]["status"] == "released"
    reasons = [e["data"].get("reason") for e in server.events(sid) if e["kind"] == "status"]
    assert "the worker shut down" in reasons
    workers = httpx.get(f"{server.url}/api/workers", headers=server.admin).json()
    assert next(w for w in workers if w["id"] == "far-t")["state"] == "offline"


def test_a_refused_token_stops_the_worker_and_a_token_is_one_workers(
    tmp_path: Path, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    env = far_env(tmp_path, "far-x", server, "not-a-token-of-this-server")
    done = subprocess.run(
        [TELECODER, "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == Exit.UNAUTHORIZED, done.stderr
    assert "refused" in done.stderr
    assert "not-a-token" not in done.stderr
    # The first worker to sign in with a token makes it its own; another is refused.
    token = server.worker_token()
    worker_procs.start(far_env(tmp_path, "far-y", server, token), "far-y")
    wait_for(
        lambda: any(
            w["id"] == "far-y"
            for w in httpx.get(f"{server.url}/api/workers", headers=server.admin).json()
        ),
        timeout=60,
        what="far-y signed in",
    )
    other = {**far_env(tmp_path, "far-z", server, token), "TELECODER_WORKER_ID": "far-z"}
    done = subprocess.run(
        [TELECODER, "worker"], env=other, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == Exit.UNAUTHORIZED, done.stderr
    assert "worker far-y's" in " ".join(done.stderr.split())


def test_a_worker_waits_for_its_server_then_runs_its_sessions(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The token is made on the server's host (its database) before the server starts.
    made = telecoder("tokens", "create", "--role", "worker", env=fast_env(tmp_path / "server"))
    assert made.returncode == 0, made.stderr
    env = far_env(tmp_path, "far-w", url, made.stdout.splitlines()[-1])
    worker_procs.start(env, "far-w")
    wait_for(lambda: "cannot sign in" in log_of(env, "far-w"), timeout=30, what="its log line")
    server = Server(tmp_path, None, port=port)
    servers.append(server)
    sid = server.submit(git_repo, "echo late > late.txt")
    done = server.until(sid, "succeeded", "failed", "dead")
    assert done["status"] == "succeeded", log_of(env, "far-w")
    assert done["attempts"][0]["worker_id"] == "far-w"


def test_a_cancel_on_the_server_stops_the_remote_attempt(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    sid = server.submit(git_repo, "sleep 60")
    env = far_env(tmp_path, "far-c", server, server.worker_token())
    worker_procs.start(env, "far-c")
    wait_for(lambda: running_on(server, sid, "far-c"), timeout=60, what="far-c runs it")
    asked = httpx.post(f"{server.url}/api/sessions/{sid}/cancel", headers=server.admin)
    assert asked.status_code in (200, 202), asked.text
    done = server.until(sid, "cancelled", "failed", "succeeded", "dead", timeout=30)
    assert done["status"] == "cancelled", log_of(env, "far-c")
    assert done["attempts"][0]["worker_id"] == "far-c"


def test_a_remote_worker_runs_sessions_side_by_side(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    ids = [server.submit(git_repo, f"sleep 2 && echo {n} > side-{n}.txt") for n in range(3)]
    env = far_env(tmp_path, "far-2", server, server.worker_token())
    worker_procs.start(env, "far-2", TELECODER_WORKER_CONCURRENCY="2")
    wait_for(
        lambda: sum(server.session(s)["status"] == "running" for s in ids) == 2,
        timeout=60,
        what="two at once",
    )
    for sid in ids:
        done = server.until(sid, "succeeded", "failed", "dead")
        assert done["status"] == "succeeded", log_of(env, "far-2")
        assert [a["worker_id"] for a in done["attempts"]] == ["far-2"]


def test_a_killed_worker_restarted_under_its_id_finishes_its_session(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    sid = server.submit(git_repo, "sleep 2 && echo again > again.txt")
    env = far_env(tmp_path, "far-r", server, server.worker_token())
    first = worker_procs.start(env, "far-r")
    wait_for(lambda: running_on(server, sid, "far-r"), timeout=60, what="far-r runs it")
    WorkerProcs.kill(first)
    worker_procs.start(env, "far-r")  # at once: its token and id are still its own
    done = server.until(sid, "succeeded", "failed", "dead")
    assert done["status"] == "succeeded", log_of(env, "far-r")
    assert [(a["worker_id"], a["status"]) for a in done["attempts"]] == [
        ("far-r", "lost"),
        ("far-r", "succeeded"),
    ]
