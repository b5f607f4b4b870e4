"""A real Docker Engine API for the docker runtime's tests: podman's Docker-compatible service.

``podman_service`` (session-scoped) starts ``podman system service`` on a Unix socket of its
own, with everything it keeps in a temporary directory (storage, run state, events), runc as
the OCI runtime (crun cannot set rlimits on machines without ``CAP_SYS_RESOURCE``), cgroupfs
(no systemd needed) and the vfs storage driver (works on any filesystem, overlay included: the
one image is a few empty directories, so copying it is free). It waits for ``/_ping``, makes
the test image, and at the end removes every container and stops the service.

The test image is a *skeleton*: the host's top-level layout (``/bin -> usr/bin``, ... and empty
``/usr``, ``/etc``, ``/tmp`` with mode 1777) made with ``podman import`` in well under a
second; the tests then let the containers read the host's ``/usr`` and ``/etc``
(``TELECODER_SANDBOX_READ=/usr,/etc``, bound read-only), so git, python3, curl and the shell
are the host's. Importing a real copy of the host's ``/usr`` (gigabytes) would take minutes
for no more coverage: the runtime sees an image either way.

Needs, as root: ``apt-get install -y podman runc catatonit`` (``make test`` installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from telecoder.settings import Settings

IMAGE = "localhost/telecoder-test:skeleton"
HOST_READ = ("/usr", "/etc")  # what the skeleton image takes from the host, read-only


@dataclass(frozen=True)
class PodmanService:
    socket: Path
    image: str
    podman: list[str]  # the podman command line sharing the service's storage

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def settings(self, settings: Settings, **changes: Any) -> Settings:
        """``settings`` running agents in this service's containers."""
        return settings.model_copy(
            update={
                "runtime": "docker",
                "docker_host": self.url,
                "docker_image": self.image,
                "sandbox_read": (*settings.sandbox_read, *HOST_READ),
                **changes,
            }
        )

    def containers(self, **labels: str) -> list[dict[str, Any]]:
        """Every container with ``labels`` (running or not), as ``GET /containers/json``."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://docker/v1.41") as client:
            response = client.get(
                "/containers/json", params={"all": "1", "filters": json.dumps(filters)}
            )
            response.raise_for_status()
            found: list[dict[str, Any]] = response.json()
            return found


def _skeleton(root: Path) -> Path:
    """A tarball of the host's top-level layout: its symlinks, and empty system directories."""
    tree = root / "skeleton"
    tree.mkdir()
    for entry in Path("/").iterdir():
        if entry.is_symlink():
            (tree / entry.name).symlink_to(os.readlink(entry))
    for name in ("usr", "etc", "tmp", "run", "var", "proc", "sys", "dev", "root", "home"):
        if not (tree / name).is_symlink():
            (tree / name).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    archive = root / "skeleton.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname=".")
    return archive


def _missing() -> str | None:
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y podman runc catatonit)"
    if os.geteuid() != 0:
        return "the podman service of the tests runs as root"
    return None


@contextlib.contextmanager
def podman_service(root: Path) -> Iterator[PodmanService]:
    if (problem := _missing()) is not None:
        pytest.fail(f"the docker runtime's tests need podman: {problem}")
    root.mkdir(parents=True, exist_ok=True)
    podman = [
        "podman",
        "--root", str(root / "storage"),
        "--runroot", str(root / "run"),
        "--tmpdir", str(root / "libpod"),
        "--storage-driver", "vfs",
        "--runtime", "runc",
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    ]  # fmt: skip
    sock = root / "podman.sock"
    log = (root / "service.log").open("wb")
    service = subprocess.Popen(
        [*podman, "system", "service", "--time=0", f"unix://{sock}"],
        cwd=root,  # conmon writes an `oom` file into its working directory
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_ping(sock, service, root / "service.log")
        subprocess.run(
            [*podman, "import", "--quiet", str(_skeleton(root)), IMAGE],
            check=True,
            capture_output=True,
        )
        yield PodmanService(socket=sock, image=IMAGE, podman=podman)
    finally:
        subprocess.run([*podman, "rm", "--all", "--force"], capture_output=True, check=False)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(10)
        log.close()


def _wait_for_ping(sock: Path, service: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not _answers(sock):
        if service.poll() is not None:
            pytest.fail(f"podman system service exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"podman system service did not answer: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def _answers(sock: Path) -> bool:
    """Whether the service answers ``GET /_ping`` with OK."""
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(sock))
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            client.settimeout(5)
            return b" 200 " in client.recv(4096)
        except OSError:
            return False
