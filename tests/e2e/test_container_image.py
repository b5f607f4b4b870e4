"""The Dockerfile builds, and its image serves: ``podman build`` on a Debian bookworm base.

No registry is reachable here, so the base is made locally (tests/container_base.py: debootstrap
from the machine's Debian mirror, made once and reused) and given as ``--build-arg BASE``; the
build reaches apt and PyPI over the host's network. The container runs ``telecoder serve`` as the
image says (uid 10001, bubblewrap's user namespaces allowed as compose.yaml allows them) on a free
port; /api/health answers, the image's HEALTHCHECK passes, and ``telecoder version`` inside is the
package's. The container and the image are removed after; the base stays for the next run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.container_base import debian_base, podman_ulimits, run

ROOT = Path(__file__).parents[2]
log = logging.getLogger(__name__)
TOKEN = "image-token-0123456789abcdef"

pytestmark = [pytest.mark.long, pytest.mark.timeout(1800)]


@pytest.fixture(scope="session")
def base_image() -> str:
    return debian_base()


@pytest.fixture
def image(base_image: str) -> Iterator[str]:
    tag = f"localhost/telecoder:test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    try:
        build = [
            "podman", "build",
            "--format", "docker",  # keeps HEALTHCHECK (OCI images have none)
            "--layers=false",  # nothing to reuse: the image is removed after
            "--network", "host",
            *podman_ulimits(),
            "--build-arg", f"BASE={base_image}",
            "--tag", tag,
            str(ROOT),
        ]  # fmt: skip
        run(build, timeout=1200)
        log.info("podman build: %.0f s", time.monotonic() - start)
        yield tag
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def container(image: str, port: int) -> Iterator[str]:
    name = f"telecoder-test-{uuid.uuid4().hex[:8]}"
    try:
        command = [
            "podman", "run", "--detach", "--name", name,
            "--network", "host",
            *podman_ulimits(),
            "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined",
            "--health-interval", "disable",  # no systemd timers here: run by hand below
            "--env", f"TELECODER_PORT={port}",
            "--env", f"TELECODER_API_TOKEN={TOKEN}",
            image,
        ]  # fmt: skip
        run(command, timeout=120)
        yield name
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)


def wait_for_health(name: str, port: int) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        if time.monotonic() > deadline:
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            pytest.fail(f"/api/health never answered 200:\n{(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(0.5)


def test_the_image_builds_on_debian_and_serves_as_its_own_user(image: str) -> None:
    port = free_port()
    start = time.monotonic()
    with container(image, port) as name:
        health = wait_for_health(name, port)
        log.info("podman run -> /api/health 200: %.1f s", time.monotonic() - start)
        assert health["status"] == "ok", health
        assert health["sandbox"] == "ok", health  # bubblewrap works in the container

        run(["podman", "healthcheck", "run", name], timeout=60)  # the image's HEALTHCHECK

        version = run(["podman", "exec", name, "telecoder", "version"], timeout=60)
        assert version.split() == ["telecoder", importlib.metadata.version("telecoder")]

        assert run(["podman", "exec", name, "id", "-u"], timeout=60).strip() == "10001"
        pid = run(["podman", "inspect", "--format", "{{.State.Pid}}", name], timeout=60)
        status = Path(f"/proc/{pid.strip()}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert uids == ["10001"] * 4, status  # the server itself, not only `exec`, is not root
        cmdline = Path(f"/proc/{pid.strip()}/cmdline").read_bytes().split(b"\0")
        assert b"/opt/telecoder/venv/bin/telecoder" in cmdline, cmdline
