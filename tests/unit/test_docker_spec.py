"""The docker runtime's pure parts: the container's spec, its ulimits, DOCKER_HOST, owners."""

from __future__ import annotations

import os
import resource
import socket
from pathlib import Path

import pytest

from telecoder.errors import SandboxUnavailable
from telecoder.protocols import Confinement, Mount
from telecoder.runtimes.docker import EMPTY, _dead, container_spec, owner, ulimits
from telecoder.runtimes.dockerapi import Address
from telecoder.runtimes.sandbox import INSIDE

RUN = Path("/run/box")


def spec(c: Confinement, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "image": "team/toolchain:1",
        "argv": ["sh", "-c", "make"],
        "cwd": Path("/w/tree"),
        "env": {"HOME": "/w/home"},
        "user": "1000:1000",
        "confinement": c,
        "run_dir": RUN,
        "labels": {"telecoder.session": "s1"},
        "stdin": False,
    }
    return container_spec(**{**args, **kw})  # type: ignore[arg-type]


def test_mounts_hidden_places_and_run_directory() -> None:
    c = Confinement(
        label="s1",
        mounts=(
            Mount(source=Path("/opt/tools"), target=Path("/opt/tools")),
            Mount(source=Path("/h/worktrees/s1"), target=Path("/h/worktrees/s1"), writable=True),
        ),
        hidden=(Path("/opt/tools/secrets"), Path("/h"), Path("/root")),
    )
    mounts = spec(c)["HostConfig"]["Mounts"]  # type: ignore[index]
    targets = {m["Target"]: m for m in mounts}
    assert targets["/opt/tools"]["ReadOnly"] is True
    assert targets["/h/worktrees/s1"]["ReadOnly"] is False
    # A hidden place below a mount is covered by an empty directory; one not below any mount
    # is simply never mounted.
    assert targets["/opt/tools/secrets"]["Source"] == str(RUN / EMPTY)
    assert "/h" not in targets
    assert "/root" not in targets
    assert targets[str(INSIDE)] == {
        "Type": "bind", "Source": str(RUN), "Target": str(INSIDE), "ReadOnly": True,
    }  # fmt: skip
    assert targets["/etc/passwd"]["Source"] == str(RUN / "passwd")


def test_no_privileges_no_network_and_the_limits() -> None:
    c = Confinement(label="s1", memory_bytes=1 << 30, pids=200, file_bytes=1 << 20)
    body = spec(c)
    host = body["HostConfig"]
    assert isinstance(host, dict)
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["Init"] is True
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (1 << 30, 1 << 30, 200)
    assert "mode=1777" in host["Tmpfs"]["/tmp"]
    assert (body["User"], body["WorkingDir"], body["Hostname"]) == (
        "1000:1000",
        "/w/tree",
        "telecoder",
    )
    assert body["Entrypoint"] == []  # the image's own entrypoint does not wrap the command
    assert body["Env"] == ["HOME=/w/home"]
    assert (body["OpenStdin"], body["Tty"]) == (False, False)
    assert spec(c, stdin=True)["StdinOnce"] is True


def test_ulimits_never_exceed_this_processs_hard_limits() -> None:
    limits = {u["Name"]: u for u in ulimits(Confinement(label="s", pids=50, file_bytes=4096))}
    assert limits["nproc"]["Hard"] == 50
    assert limits["fsize"]["Hard"] == 4096
    assert limits["core"]["Hard"] == 0
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or limits["nofile"]["Hard"] <= hard
    for item in limits.values():
        assert item["Soft"] == item["Hard"]
    unlimited = {u["Name"]: u for u in ulimits(Confinement(label="s"))}
    assert "fsize" not in unlimited
    assert unlimited["nproc"]["Hard"] <= 32768  # no process limit: Linux's default pid_max


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///var/run/docker.sock", Address(socket="/var/run/docker.sock")),
        ("tcp://10.0.0.5:2375", Address(host="10.0.0.5", port=2375)),
        ("tcp://docker", Address(host="docker", port=2375)),
    ],
)
def test_docker_host(url: str, expected: Address) -> None:
    assert Address.parse(url) == expected
    assert str(Address.parse(url)).startswith(url.split("://")[0])


@pytest.mark.parametrize("url", ["ssh://me@host", "npipe:////./pipe/docker", "/var/run/x.sock"])
def test_unsupported_docker_hosts_are_refused_clearly(url: str) -> None:
    with pytest.raises(SandboxUnavailable, match="DOCKER_HOST"):
        Address.parse(url)


def test_an_owner_is_dead_only_when_its_process_on_this_host_is_gone() -> None:
    assert not _dead(owner())
    host, pid, started = owner().split(":")
    assert _dead(f"{host}:{pid}:{int(started) + 1}")  # a later process with a reused pid
    assert _dead(f"{host}:{2**22 + 1}:1")  # above pid_max: no such process
    assert not _dead(f"another-{socket.gethostname()}:1:1")  # another host's: left to it
    assert pid == str(os.getpid())
