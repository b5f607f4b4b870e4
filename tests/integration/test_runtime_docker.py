"""The docker runtime against a real Docker Engine API (podman's service, runc, real containers):
sessions through the worker and pipeline, streams, stdin, exit codes, stopping, limits, clean-up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from telecoder.assemble import build_worker
from telecoder.domain import FailureKind, ResultType, SessionStatus
from telecoder.errors import SandboxUnavailable
from telecoder.protocols import Confinement, Endpoint, Mount, NetworkPolicy
from telecoder.runtimes.docker import (
    EMPTY,
    LABEL,
    OWNER,
    DockerProcess,
    DockerRuntime,
    container_spec,
    sandbox_uid,
)
from telecoder.runtimes.dockerapi import DockerAPI
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.docker_support import HOST_READ, PodmanService
from tests.integration.test_engine_shell import (
    all_events,
    assert_gone,
    execute,
    mark,
    outputs,
    request,
    tuned,
    wait_for_output,
)
from tests.server import client


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'docker.db'}"


@pytest.fixture
def docker(podman: PodmanService, settings: Settings) -> Settings:
    return podman.settings(tuned(settings))


def runtime(podman: PodmanService) -> DockerRuntime:
    return DockerRuntime(image=podman.image, host=podman.url, env_names=())


def confinement(
    workdir: Path, label: str = "test-docker", network: str = "none", **limits: int
) -> Confinement:
    reads = tuple(Mount(source=Path(p), target=Path(p)) for p in HOST_READ)
    return Confinement(
        label=label,
        mounts=(*reads, Mount(source=workdir, target=workdir, writable=True)),
        network=NetworkPolicy(mode=network),  # type: ignore[arg-type]
        **limits,  # type: ignore[arg-type]
    )


async def run(
    podman: PodmanService,
    script: str,
    workdir: Path,
    *,
    stdin: bytes | None = None,
    label: str = "test-docker",
    **limits: int,
) -> tuple[int, list[str], list[str]]:
    process = await runtime(podman).spawn(
        ["sh", "-c", script],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir)},
        stdin=stdin,
        interactive=False,
        confinement=confinement(workdir, label, **limits),
    )
    out: list[str] = []
    err: list[str] = []
    async with asyncio.timeout(60):
        async for stream, line in process.lines():
            (out if stream == "stdout" else err).append(line.decode(errors="replace"))
        return await process.wait(), out, err


async def test_a_session_runs_in_a_container_and_pushes_its_commit(
    docker: Settings, store: Store, git_repo: GitRepo, podman: PodmanService
) -> None:
    worker = build_worker(docker, store)
    new = request(git_repo, "sed -i 's/colour/color/' README.md && id -u && hostname")
    done = await execute(worker, store, new, within=60)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.type == ResultType.BRANCH
    sha = done.result.commit
    assert sha is not None
    assert git_repo.remote_git("show", f"{sha}:README.md") == "The color of magic."
    uid, hostname = outputs(await all_events(store, new.id))
    assert int(uid) == sandbox_uid(new.id)
    assert hostname == "telecoder"
    assert podman.containers(**{"telecoder.session": new.id}) == []


async def test_output_lines_arrive_in_order_on_each_stream(
    podman: PodmanService, tmp_path: Path
) -> None:
    code, out, err = await run(
        podman,
        "for i in $(seq 1 300); do echo out $i; echo err $i >&2; done; "
        "head -c 200000 /dev/zero | tr '\\0' x; echo; printf 'no newline'",
        tmp_path,
    )
    assert code == 0
    assert out[:300] == [f"out {i}" for i in range(1, 301)]
    assert out[300:] == ["x" * 200_000, "no newline"]  # across several frames, whole
    assert err == [f"err {i}" for i in range(1, 301)]


async def test_stdin_is_written_and_closed(podman: PodmanService, tmp_path: Path) -> None:
    code, out, _ = await run(podman, "cat; echo after-eof", tmp_path, stdin=b"one\ntwo\n")
    assert (code, out) == (0, ["one", "two", "after-eof"])


async def test_an_interactive_conversation_over_stdin(
    podman: PodmanService, tmp_path: Path
) -> None:
    process = await runtime(podman).spawn(
        ["sh", "-c", 'while read -r line; do echo "got $line"; done; echo bye'],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdin=None,
        interactive=True,
        confinement=confinement(tmp_path),
    )
    lines = process.lines()
    async with asyncio.timeout(30):
        for word in ("hello", "again"):
            await process.send(f"{word}\n".encode())
            assert await anext(lines) == ("stdout", f"got {word}".encode())
        await process.close_stdin()
        assert await anext(lines) == ("stdout", b"bye")
        assert await process.wait() == 0


@pytest.mark.parametrize("status", [0, 3, 42])
async def test_the_exit_status_is_the_commands(
    podman: PodmanService, tmp_path: Path, status: int
) -> None:
    code, _, _ = await run(podman, f"exit {status}", tmp_path)
    assert code == status


async def test_stop_kills_a_container_that_ignores_sigterm_and_removes_it(
    podman: PodmanService, tmp_path: Path
) -> None:
    process = await runtime(podman).spawn(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdin=None,
        interactive=False,
        confinement=confinement(tmp_path, label="stop-me"),
    )
    assert isinstance(process, DockerProcess)
    assert await anext(process.lines()) == ("stdout", b"ready")
    started = time.monotonic()
    code = await process.stop(grace=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert code == 128 + signal.SIGKILL
    assert podman.containers(**{"telecoder.session": "stop-me"}) == []


async def test_cancel_stops_the_container_within_seconds(
    docker: Settings, store: Store, git_repo: GitRepo, podman: PodmanService
) -> None:
    worker = build_worker(docker, store)
    marker = mark()
    new = request(git_repo, f"echo started; exec sleep {marker}")
    await store.sessions.create(new)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    running = asyncio.create_task(worker.execute(claimed))
    await wait_for_output(store, new.id)
    assert podman.containers(**{"telecoder.session": new.id}) != []
    cancelled_at = time.monotonic()
    await store.sessions.cancel(new.id)
    async with asyncio.timeout(10):
        done = await running
    assert time.monotonic() - cancelled_at < docker.heartbeat_seconds + 3
    assert done is not None
    assert done.status == SessionStatus.CANCELLED
    await assert_gone(marker)
    assert podman.containers(**{"telecoder.session": new.id}) == []


async def test_a_timeout_stops_the_container(
    docker: Settings, store: Store, git_repo: GitRepo, podman: PodmanService
) -> None:
    worker = build_worker(docker, store)
    marker = mark()
    new = request(git_repo, f"setsid sleep {marker} & echo $!; wait", timeout_seconds=1.0)
    started = time.monotonic()
    done = await execute(worker, store, new, within=30)
    assert time.monotonic() - started < 8
    assert done.status == SessionStatus.FAILED
    assert done.failure_kind == FailureKind.TIMEOUT
    await assert_gone(marker)
    assert podman.containers(**{"telecoder.session": new.id}) == []


async def test_memory_processes_and_file_size_are_limited(
    podman: PodmanService, tmp_path: Path
) -> None:
    code, out, err = await run(
        podman,
        "python3 -c 'b = bytearray(512 << 20); print(len(b))'; echo memory=$?; "
        "dd if=/dev/zero of=big bs=1M count=4 2>/dev/null; echo dd=$?; "
        "for i in $(seq 100); do sleep 5 & done",
        tmp_path,
        memory_bytes=256 << 20,
        pids=50,
        file_bytes=1 << 20,
    )
    assert "memory=137" in out, (out, err)  # killed by the kernel: out of memory
    assert any("fork" in line or "Resource temporarily unavailable" in line for line in err), err
    assert "dd=153" in out  # SIGXFSZ
    assert (tmp_path / "big").stat().st_size == 1 << 20
    assert code != 0  # the shell could not fork its 51st process


async def test_a_missing_daemon_is_a_clear_sandbox_unavailable(tmp_path: Path) -> None:
    rt = DockerRuntime(image="any", host=f"unix://{tmp_path}/no.sock", env_names=())
    with pytest.raises(SandboxUnavailable, match="DOCKER_HOST"):
        await rt.spawn(["true"], cwd=tmp_path, env={}, stdin=None, interactive=False)
    with pytest.raises(SandboxUnavailable, match="TELECODER_DOCKER_IMAGE"):
        await DockerRuntime(image="", host="unix:///x").spawn(
            ["true"], cwd=tmp_path, env={}, stdin=None, interactive=False
        )


async def test_a_missing_image_is_refused(podman: PodmanService, tmp_path: Path) -> None:
    rt = DockerRuntime(image="localhost/no-such-image:1", host=podman.url, env_names=())
    with pytest.raises(SandboxUnavailable, match="no-such-image"):
        await rt.spawn(
            ["true"], cwd=tmp_path, env={}, stdin=None, interactive=False,
            confinement=confinement(tmp_path),
        )  # fmt: skip


async def test_passed_through_variables_reach_the_container(
    podman: PodmanService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", "token-for-the-cli")
    monkeypatch.setenv("NOT_PASSED", "kept-outside")
    rt = DockerRuntime(image=podman.image, host=podman.url, env_names=("SERVICE_TOKEN",))
    process = await rt.spawn(
        ["sh", "-c", "echo ${SERVICE_TOKEN:-none} ${NOT_PASSED:-none}"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin"},
        stdin=None,
        interactive=False,
        confinement=confinement(tmp_path),
    )
    assert [line async for _, line in process.lines()] == [b"token-for-the-cli none"]
    assert await process.wait() == 0


SPAWN_AND_DIE = """
import asyncio, os, sys
from pathlib import Path
from telecoder.protocols import Confinement, Mount
from telecoder.runtimes.docker import DockerRuntime

async def main():
    workdir = Path(sys.argv[3])
    rt = DockerRuntime(image=sys.argv[1], host=sys.argv[2], env_names=())
    mounts = tuple(Mount(source=Path(p), target=Path(p)) for p in ("/usr", "/etc"))
    process = await rt.spawn(
        ["sleep", "300"], cwd=workdir, env={"PATH": "/usr/bin"}, stdin=None, interactive=False,
        confinement=Confinement(label="orphan", mounts=mounts),
    )
    print("spawned", flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


async def test_a_workers_containers_go_when_it_is_killed(
    podman: PodmanService, tmp_path: Path
) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SPAWN_AND_DIE, podman.image, podman.url, str(tmp_path),
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(30):
            assert await worker.stdout.readline() == b"spawned\n"
        [orphan] = podman.containers(**{"telecoder.session": "orphan"})
        assert orphan["Labels"][OWNER].split(":")[1] == str(worker.pid)
        assert orphan["Labels"][LABEL] == "docker"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its whole process group
        await worker.wait()
    # Its reaper noticed and removed the container, with no other spawn.
    deadline = time.monotonic() + 10
    while podman.containers(**{"telecoder.session": "orphan"}):
        assert time.monotonic() < deadline, "the container outlived its worker"
        await asyncio.sleep(0.1)


async def test_a_spawn_sweeps_the_containers_of_dead_workers_on_this_host(
    podman: PodmanService, tmp_path: Path
) -> None:
    """The backstop, for when the reaper died too: a container whose owner is gone."""
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    api = DockerAPI(podman.url)
    try:
        spec = container_spec(
            image=podman.image, argv=["sleep", "300"], cwd=Path("/"), env={}, user="4242:4242",
            confinement=confinement(tmp_path, label="stale"), run_dir=tmp_path,
            labels={LABEL: "docker", OWNER: f"{socket.gethostname()}:{gone.pid}:1",
                    "telecoder.session": "stale"},
            stdin=False,
        )  # fmt: skip
        (tmp_path / "passwd").touch()
        (tmp_path / "group").touch()
        (tmp_path / EMPTY).mkdir()
        await api.start(await api.create(spec))
    finally:
        await api.close()
    assert podman.containers(**{"telecoder.session": "stale"}) != []
    code, _, _ = await run(podman, "true", tmp_path)
    assert code == 0
    assert podman.containers(**{"telecoder.session": "stale"}) == []


@pytest.fixture
def model_endpoint() -> Iterator[int]:
    """An HTTP service on the host's loopback, standing in for a model endpoint."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"model says hi")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_a_model_endpoint_is_reached_through_the_egress_proxy_and_nothing_else(
    podman: PodmanService, tmp_path: Path, model_endpoint: int
) -> None:
    reads = tuple(Mount(source=Path(p), target=Path(p)) for p in HOST_READ)
    denied: list[tuple[str, int, str]] = []
    c = Confinement(
        label="model-net",
        mounts=(*reads, Mount(source=tmp_path, target=tmp_path, writable=True)),
        network=NetworkPolicy(
            mode="model", endpoints=(Endpoint(host="127.0.0.1", port=model_endpoint),)
        ),
        on_denied=lambda endpoint, why: denied.append((endpoint.host, endpoint.port, why)),
    )
    process = await runtime(podman).spawn(
        [
            "sh",
            "-c",
            f"curl -sS -m 10 http://127.0.0.1:{model_endpoint}/; echo; "
            "curl -sS -m 10 https://example.com/ -o /dev/null || echo refused",
        ],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdin=None,
        interactive=False,
        confinement=c,
    )
    async with asyncio.timeout(60):
        out = [line async for stream, line in process.lines() if stream == "stdout"]
        assert await process.wait() == 0
    assert out == [b"model says hi", b"refused"]
    assert [(host, port) for host, port, _ in denied] == [("example.com", 443)]


async def test_an_image_without_python_fails_visibly_when_a_network_needs_the_bridge(
    podman: PodmanService, tmp_path: Path
) -> None:
    """The skeleton image has no python3 of its own (it reads the host's /usr only when a
    confinement mounts it): with a network policy the bridge cannot start, and says so."""
    c = Confinement(label="no-python", network=NetworkPolicy(mode="model"))
    process = await runtime(podman).spawn(
        ["true"], cwd=tmp_path, env={"PATH": "/usr/bin"}, stdin=None, interactive=False,
        confinement=c,
    )  # fmt: skip
    async with asyncio.timeout(30):
        said = [line async for _, line in process.lines()]
        assert await process.wait() != 0
    assert any(b"exec" in line and b"No such file" in line for line in said), said
    assert podman.containers(**{"telecoder.session": "no-python"}) == []


async def test_health_says_whether_containers_can_start(
    settings: Settings, store: Store, podman: PodmanService, tmp_path: Path
) -> None:
    cases = {
        "ok": podman.settings(settings),
        "no daemon": podman.settings(settings, docker_host=f"unix://{tmp_path}/none.sock"),
        "no image": podman.settings(settings, docker_image="localhost/absent:1"),
    }
    found = {}
    for name, case in cases.items():
        async with client(create_app(case, store)) as c:
            response = await c.get("/api/health")
        body = response.json()
        found[name] = (response.status_code, body["runtime"], body["sandbox"])
        if name != "ok":
            assert ("DOCKER_HOST" if name == "no daemon" else "localhost/absent:1") in body[
                "sandbox_problem"
            ]
    assert found == {
        "ok": (200, "docker", "ok"),
        "no daemon": (503, "docker", "unavailable"),
        "no image": (503, "docker", "unavailable"),
    }
