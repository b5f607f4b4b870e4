"""Draining a worker (``telecoder workers drain/resume``, ``POST /api/workers/{id}/drain``): it
finishes what it runs and claims nothing new, within a heartbeat, until resumed — in the store on
both backends, over the API (admins only), with real `telecoder worker` processes, and with the
embedded worker of a real `telecoder serve`. Also the host figures each heartbeat carries."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from telecoder.domain import HostStats, NewSession, WorkerState
from telecoder.errors import WorkerNotFound
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worker import host_stats
from tests.cli import TELECODER, cli_env, telecoder, wait_for
from tests.conftest import GitRepo
from tests.integration.test_cli_status import free_port
from tests.procs import WorkerProcs, fast_env, show, worker_processes
from tests.server import client

ADMIN = "drain-admin-token-0123456789"


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def workers_json(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = telecoder("workers", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {w["id"]: w for w in json.loads(done.stdout)}


async def test_drain_and_resume_in_the_store(store: Store):
    await store.workers.register("w1", host="h", pid=os.getpid(), capacity=2, engines=[])
    assert await store.workers.beat("w1", state=WorkerState.WORKING, running=1) is False
    drained = await store.workers.set_drain("w1", True)
    assert (drained.drain, drained.state) == (True, WorkerState.DRAINING)
    # The worker learns it from its heartbeat; its idle/working is kept as draining.
    stats = HostStats(cpu_count=8, mem_total=16 << 30, mem_available=9 << 30, load1=1.25)
    assert await store.workers.beat("w1", state=WorkerState.IDLE, running=0, stats=stats)
    (w,) = await store.workers.list()
    assert (w.state, w.drain, w.stats) == (WorkerState.DRAINING, True, stats)
    assert w.to_dict()["host_stats"] == {
        "cpu_count": 8, "mem_total": 16 << 30, "mem_available": 9 << 30, "load1": 1.25
    }  # fmt: skip
    # The claim itself refuses at once, before the worker's next heartbeat.
    await store.sessions.create(NewSession(repo="/tmp/r", prompt="p", engine="shell"))
    assert await store.queue.claim("w1") is None
    resumed = await store.workers.set_drain("w1", False)
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    assert (resumed.drain, resumed.state) == (False, WorkerState.IDLE)
    assert await store.workers.beat("w1", state=WorkerState.WORKING, running=1) is False
    assert (await store.workers.get("w1")).stats == stats  # a beat without figures keeps them
    with pytest.raises(WorkerNotFound):
        await store.workers.set_drain("nobody", True)


def test_host_stats_of_this_host():
    stats = host_stats()
    assert stats.cpu_count == os.cpu_count()
    assert stats.mem_total
    assert stats.mem_available
    assert 0 < stats.mem_available <= stats.mem_total
    assert stats.load1 is not None
    assert stats.load1 >= 0


async def test_drain_over_the_api_is_for_admins(settings: Settings, store: Store):
    await store.users.add("alice", "member")
    _, member = await store.users.create_token("alice")
    _, worker = await store.users.create_token(None, role="worker")
    await store.workers.register("w1", host="h", pid=os.getpid(), capacity=1, engines=[])
    app = create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{ADMIN}")}), store)
    async with client(app) as c:
        for token in (member, worker):
            refused = await c.post(
                "/api/workers/w1/drain", headers={"authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 403, refused.text
        assert not (await store.workers.get("w1")).drain
        admin = {"authorization": f"Bearer {ADMIN}"}
        done = await c.post("/api/workers/w1/drain", headers=admin)
        assert done.status_code == 200, done.text
        assert (done.json()["drain"], done.json()["state"]) == (True, "draining")
        listed = (await c.get("/api/workers", headers=admin)).json()
        assert listed[0]["drain"] is True
        assert "host_stats" in listed[0]
        page = await c.get("/workers", headers={**admin, "accept": "text/html"})
        assert page.status_code == 200
        assert "(drained)" in page.text
        assert 'action="/workers/w1/resume"' in page.text
        assert (await c.post("/api/workers/nobody/drain", headers=admin)).status_code == 404
        back = await c.post("/api/workers/w1/resume", headers=admin)
        assert (back.json()["drain"], back.json()["state"]) == (False, "idle")


def test_a_drained_worker_finishes_its_session_and_claims_nothing_until_resumed(
    git_repo: GitRepo, home: Path, worker_procs: WorkerProcs
):
    env = fast_env(home)
    repo = str(git_repo.path)
    worker_procs.start(env, "worker-a")
    wait_for(lambda: "worker-a" in workers_json(env), what="worker-a registers")
    first = telecoder("run", "sleep 3; echo 1 > one.txt", "--repo", repo, "--detach", env=env)
    s1 = first.stdout.strip()
    wait_for(lambda: show(s1, env)["status"] == "running", what="s1 runs")

    drained = telecoder("workers", "drain", "worker-a", "--json", env=env)
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["state"] == "draining"
    s2 = telecoder("run", "echo 2 > two.txt", "--repo", repo, "--detach", env=env).stdout.strip()
    # Its running session finishes; the new one waits, heartbeat after heartbeat (0.3 s).
    assert (
        wait_for(lambda: show(s1, env)["finished_at"] and show(s1, env), timeout=60)["status"]
        == "succeeded"
    )
    time.sleep(2)
    assert show(s2, env)["status"] == "queued"
    seen = workers_json(env)["worker-a"]
    assert (seen["state"], seen["drain"], seen["running"]) == ("draining", True, 0)
    assert seen["host_stats"]["cpu_count"] == os.cpu_count()
    assert "draining" in telecoder("workers", env=env).stdout

    # Another worker runs it meanwhile…
    worker_procs.start(env, "worker-b")
    final = wait_for(lambda: (s := show(s2, env))["finished_at"] and s, timeout=60)
    assert (final["status"], final["attempts"][-1]["worker_id"]) == ("succeeded", "worker-b")
    WorkerProcs.kill(worker_procs.procs[-1])
    # …and once resumed, worker-a claims again.
    resumed = telecoder("workers", "resume", "worker-a", env=env)
    assert resumed.returncode == 0
    assert "resumed" in resumed.stdout
    s3 = telecoder("run", "echo 3 > three.txt", "--repo", repo, "--detach", env=env).stdout.strip()
    final = wait_for(lambda: (s := show(s3, env))["finished_at"] and s, timeout=60)
    assert (final["status"], final["attempts"][-1]["worker_id"]) == ("succeeded", "worker-a")
    assert workers_json(env)["worker-a"]["drain"] is False
    missing = telecoder("workers", "drain", "nobody", env=env)
    assert missing.returncode == 3, missing.stderr


def test_the_embedded_worker_of_serve_obeys_a_drain_over_http(git_repo: GitRepo, home: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = fast_env(
        home,
        TELECODER_API_TOKEN=ADMIN,
        TELECODER_PORT=str(port),
        TELECODER_WORKER_ID="embedded-1",
    )
    proc = subprocess.Popen(
        [TELECODER, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    admin = {"authorization": f"Bearer {ADMIN}"}
    try:
        wait_for(lambda: _up(url, proc), timeout=30, what="serve")
        remote = cli_env(home / "elsewhere", TELECODER_TOKEN=ADMIN)
        done = telecoder("workers", "drain", "embedded-1", "--server", url, env=remote)
        assert done.returncode == 0, done.stderr + done.stdout
        body = {"repo": str(git_repo.path), "prompt": "echo hi > hi.txt", "engine": "shell"}
        created = httpx.post(f"{url}/api/sessions", json=body, headers=admin)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        time.sleep(2)
        assert httpx.get(f"{url}/api/sessions/{sid}", headers=admin).json()["status"] == "queued"
        (me,) = httpx.get(f"{url}/api/workers", headers=admin).json()
        assert (me["state"], me["drain"]) == ("draining", True)
        assert me["host_stats"]["cpu_count"] == os.cpu_count()
        done = telecoder("workers", "resume", "embedded-1", "--server", url, env=remote)
        assert done.returncode == 0, done.stderr + done.stdout
        final = wait_for(
            lambda: (
                (s := httpx.get(f"{url}/api/sessions/{sid}", headers=admin).json())["finished_at"]
                and s
            ),
            timeout=60,
        )
        assert final["status"] == "succeeded"
        del remote["TELECODER_TOKEN"]
        refused = telecoder("workers", "drain", "embedded-1", "--server", url, env=remote)
        assert refused.returncode == 7
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _up(url: str, proc: subprocess.Popen[str]) -> bool:
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    try:
        return httpx.get(f"{url}/api/health").status_code in (200, 503)
    except httpx.HTTPError:
        return False
