"""The docker runtime: every engine, setup and check command in a container of a team's own image
(``TELECODER_DOCKER_IMAGE``), through the Docker Engine API at ``DOCKER_HOST`` (Docker, or
podman's Docker-compatible service).

It keeps the sandbox runtime's promises. A container sees its image, read-only; the
``Confinement``'s mounts (the worktree and engine home writable, the session's git dir, the
shared objects and tool directories read-only) at the same paths as on the host; a private
``/tmp``; a tmpfs over every hidden place a mount would otherwise show. It runs as the
sandbox's own uid when TeleCoder is root (``sandbox_uid``, which owns the writable mounts),
with no capabilities, ``no-new-privileges``, its own PID namespace under an init, no network
(``NetworkMode: none``) but the egress proxy's Unix socket, bridged to a loopback port inside
by ``sandbox_init`` (run by the image's ``python3``: an image needs one unless the policy is
``none``), a memory, process and file-size limit, and explicit ulimits (at or below the
worker's own hard limits: a runtime without ``CAP_SYS_RESOURCE`` cannot raise them).

Its output is the attach stream, demultiplexed into lines; its exit status comes from
``wait``; stopping it is ``kill`` (SIGTERM, a grace period, SIGKILL); it is removed when it
ends. Every container is labelled with its session and its owner (host, pid and start time of
the worker process). A worker's first spawn starts its ``dockerreaper``, which removes the
worker's containers as soon as the worker dies (SIGKILL included); and each spawn removes the
containers of owners on this host that have died (the backstop if the reaper died too).

``TELECODER_DOCKER_ENV`` names host environment variables passed into every container (a
service CLI's token, say), on top of the engine's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from telecoder.errors import SandboxUnavailable
from telecoder.protocols import Confinement, Mount, Stream
from telecoder.runtimes import dockerreaper
from telecoder.runtimes.dockerapi import Attachment, DockerAPI
from telecoder.runtimes.egress import EgressProxy
from telecoder.runtimes.local import EOF, queued_lines, split_lines
from telecoder.runtimes.sandbox import (
    INSIDE,
    chown_tree,
    init_command,
    proxied_environment,
    proxy_port,
    sandbox_uid,
    write_identity,
)
from telecoder.settings import Settings

log = logging.getLogger(__name__)

LABEL = "telecoder.runtime"  # every container of this runtime: LABEL=docker
OWNER = "telecoder.owner"  # host:pid:start time of the worker process that made it
SESSION = "telecoder.session"
WORKER = "telecoder.worker"
PYTHON = "python3"  # the image's, for sandbox_init
NPROC_CEILING = 32768  # Linux's default pid_max: RLIMIT_NPROC when no process limit is set
EMPTY = "empty"  # in the run directory: what covers a hidden place


class DockerRuntime:
    name = "docker"
    confined = True

    def __init__(
        self,
        *,
        image: str | None = None,
        host: str | None = None,
        env_names: Sequence[str] | None = None,
        worker: str | None = None,
    ) -> None:
        environ = os.environ
        self.image = image or environ.get("TELECODER_DOCKER_IMAGE")
        self.host = host or environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        names = environ.get("TELECODER_DOCKER_ENV", "").split(",")
        self.env_names = tuple(env_names if env_names is not None else filter(None, names))
        self.worker = worker or environ.get("TELECODER_WORKER_ID") or owner()

    def configure(self, settings: Settings) -> None:
        """Take the image, daemon and passed-through variables from ``settings``."""
        self.image = settings.docker_image
        self.host = settings.docker_host
        self.env_names = settings.docker_env
        self.worker = settings.worker_id

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin: bytes | None,
        interactive: bool,
        confinement: Confinement | None = None,
    ) -> DockerProcess:
        if not self.image:
            raise SandboxUnavailable(
                "the docker runtime needs an image: set TELECODER_DOCKER_IMAGE to one with your "
                "toolchains (and python3, for any network policy but none)"
            )
        if confinement is None:
            confinement = Confinement(
                label="sandbox", mounts=(Mount(source=cwd, target=cwd, writable=True),)
            )
        passed = {k: os.environ[k] for k in self.env_names if k in os.environ}
        api = DockerAPI(self.host)
        box = _Container(api, self, confinement, {**env, **passed})
        try:
            await asyncio.to_thread(dockerreaper.hold, self.host, f"{OWNER}={owner()}")
            await sweep(api)
            return await box.start(argv, cwd=cwd, stdin=stdin, interactive=interactive)
        except BaseException:
            await box.close()
            raise


async def unavailable(host: str, image: str | None) -> str | None:
    """Why no container can start (no image named, no daemon, no such image); None if one can."""
    if not image:
        return "TELECODER_DOCKER_IMAGE is not set: name an image with your toolchains"
    api = DockerAPI(host)
    try:
        await api.ping()
        if not await api.has_image(image):
            return f"the Docker daemon at {api.address} has no image {image}: build or pull it"
    except SandboxUnavailable as e:
        return e.message
    finally:
        await api.close()
    return None


@functools.cache
def owner() -> str:
    """This process, as no other on this host was or will be: host, pid and start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def _started(pid: int) -> str:
    """A process's start time (clock ticks after boot), or "" when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def _dead(owner_label: str) -> bool:
    """Whether the worker process that labelled a container is gone (from this host)."""
    host, _, rest = owner_label.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's: its own workers sweep it
    return _started(int(pid)) != started


async def sweep(api: DockerAPI) -> list[str]:
    """Remove the containers of dead workers on this host; return their ids."""
    stale = [
        c["Id"]
        for c in await api.containers({LABEL: "docker"})
        if _dead((c.get("Labels") or {}).get(OWNER, ""))
    ]
    for container in stale:
        log.warning("removing container %s: the worker that started it is gone", container[:12])
        await api.remove(container)
    return stale


def ulimits(confinement: Confinement) -> list[dict[str, Any]]:
    """Explicit ulimits, none above this process's hard limits (runc cannot raise them)."""

    def capped(kind: int, wanted: int) -> int:
        hard = resource.getrlimit(kind)[1]
        return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    nofile = capped(resource.RLIMIT_NOFILE, 1 << 20 if nofile == resource.RLIM_INFINITY else nofile)
    nproc = capped(resource.RLIMIT_NPROC, confinement.pids or NPROC_CEILING)
    limits = {"nofile": nofile, "nproc": nproc, "core": 0}
    if confinement.file_bytes is not None:
        limits["fsize"] = capped(resource.RLIMIT_FSIZE, confinement.file_bytes)
    return [{"Name": name, "Soft": value, "Hard": value} for name, value in limits.items()]


def container_spec(
    *,
    image: str,
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    user: str | None,
    confinement: Confinement,
    run_dir: Path,
    labels: Mapping[str, str],
    stdin: bool,
) -> dict[str, Any]:
    """The body of ``POST /containers/create`` for one confined command; ``run_dir`` holds
    its ``passwd``, ``group``, an ``EMPTY`` directory and (with a network) the egress proxy's
    socket and ``init.py``, and is seen as ``INSIDE``."""
    c = confinement
    mounts = [_bind(m.source, m.target, writable=m.writable) for m in c.mounts]
    for hidden in c.hidden:
        # A hidden place below a mount would show through it: cover it with an empty directory
        # (deeper mounts, such as the session's own worktree below a hidden worktrees
        # directory, go on top). Not a tmpfs: podman would fill it with what lies below.
        if any(hidden != m.target and hidden.is_relative_to(m.target) for m in c.mounts):
            mounts.append(_bind(run_dir / EMPTY, hidden))
    mounts.append(_bind(run_dir, INSIDE))
    for name in ("passwd", "group"):
        mounts.append(_bind(run_dir / name, Path("/etc") / name))
    host_config: dict[str, Any] = {
        "Mounts": mounts,
        "Tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
        "ReadonlyRootfs": True,
        "NetworkMode": "none",
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Init": True,
        "Ulimits": ulimits(c),
        "PidsLimit": c.pids or 0,
    }
    if c.memory_bytes:
        host_config["Memory"] = host_config["MemorySwap"] = c.memory_bytes
    spec: dict[str, Any] = {
        "Image": image,
        "Cmd": list(argv),
        "Entrypoint": [],
        "WorkingDir": str(cwd),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Hostname": "telecoder",
        "Labels": dict(labels),
        "AttachStdin": stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": stdin,
        "StdinOnce": stdin,
        "Tty": False,
        "HostConfig": host_config,
    }
    if user is not None:
        spec["User"] = user
    return spec


def _bind(source: Path, target: Path, *, writable: bool = False) -> dict[str, Any]:
    return {"Type": "bind", "Source": str(source), "Target": str(target), "ReadOnly": not writable}


class _Container:
    """One container's host-side resources: its run directory and egress proxy."""

    def __init__(
        self, api: DockerAPI, runtime: DockerRuntime, c: Confinement, env: Mapping[str, str]
    ) -> None:
        self.api = api
        self.runtime = runtime
        self.confinement = c
        self.env = dict(env)
        self.root = os.geteuid() == 0
        self.uid = sandbox_uid(c.label) if self.root else os.getuid()
        self.gid = self.uid if self.root else os.getgid()
        self.run_dir = Path(tempfile.mkdtemp(prefix="telecoder-docker-"))
        self.proxy: EgressProxy | None = None
        self.container: str | None = None

    async def start(
        self, argv: Sequence[str], *, cwd: Path, stdin: bytes | None, interactive: bool
    ) -> DockerProcess:
        c = self.confinement
        if self.root:
            await asyncio.to_thread(self._own_writable)
        write_identity(self.run_dir, self.uid, self.gid, self.env.get("HOME", "/tmp"))
        (self.run_dir / EMPTY).mkdir(mode=0o755)
        command = list(argv)
        port: int | None = None
        if c.network.mode != "none":
            shutil.copyfile(Path(__file__).with_name("sandbox_init.py"), self.run_dir / "init.py")
            (self.run_dir / "init.py").chmod(0o644)  # whatever TeleCoder's umask
            self.proxy = EgressProxy(c.network, self.run_dir / "proxy.sock", on_denied=c.on_denied)
            await self.proxy.start()
            os.chown(self.proxy.path, self.uid, self.gid)
            port = proxy_port(c.network)
            command = init_command(PYTHON, c.network, port, command)
        piped = stdin is not None or interactive
        assert self.runtime.image is not None
        spec = container_spec(
            image=self.runtime.image,
            argv=command,
            cwd=cwd,
            env=proxied_environment(self.env, port),
            user=f"{self.uid}:{self.gid}",
            confinement=c,
            run_dir=self.run_dir,
            labels={
                LABEL: "docker",
                OWNER: owner(),
                SESSION: c.label,
                WORKER: self.runtime.worker,
            },
            stdin=piped,
        )
        self.container = await self.api.create(spec)
        attachment = await self.api.attach(self.container, stdin=piped)
        try:
            await self.api.start(self.container)
        except BaseException:
            await attachment.close()
            raise
        process = DockerProcess(self.api, self.container, attachment, on_exit=self.close)
        if stdin:
            await process.send(stdin)
        if piped and not interactive:
            await process.close_stdin()
        return process

    async def close(self) -> None:
        try:
            if self.container is not None:
                with contextlib.suppress(SandboxUnavailable):
                    await self.api.remove(self.container)
                self.container = None
        finally:
            if self.proxy is not None:
                await self.proxy.close()
                self.proxy = None
            await self.api.close()
            await asyncio.to_thread(shutil.rmtree, self.run_dir, True)

    def _own_writable(self) -> None:
        for mount in self.confinement.mounts:
            if mount.writable or mount.owned:
                chown_tree(mount.source, self.uid, self.gid)


class DockerProcess:
    """A running container, as a ``Process``: its lines, its stdin, its exit status."""

    def __init__(
        self,
        api: DockerAPI,
        container: str,
        attachment: Attachment,
        on_exit: Callable[[], Awaitable[None]],
    ) -> None:
        self.api = api
        self.container = container
        self._attachment = attachment
        self._on_exit = on_exit
        self._code: int | None = None
        self._exited = asyncio.Event()
        self._cleaned = asyncio.Event()
        self._queue: asyncio.Queue[tuple[Stream, bytes] | object] = asyncio.Queue(maxsize=1024)
        self._chunks: dict[int, asyncio.Queue[bytes | None]] = {
            1: asyncio.Queue(maxsize=64),
            2: asyncio.Queue(maxsize=64),
        }
        self._demux = asyncio.create_task(self._read_frames())
        self._readers = [
            asyncio.create_task(self._split("stdout", self._chunks[1])),
            asyncio.create_task(self._split("stderr", self._chunks[2])),
        ]
        self._reaper = asyncio.create_task(self._reap())

    @property
    def pid(self) -> int:
        return 0  # the process is the daemon's child, in the container's PID namespace

    async def _read_frames(self) -> None:
        try:
            async for stream, payload in self._attachment.frames():
                if (queue := self._chunks.get(stream)) is not None and payload:
                    await queue.put(payload)
        finally:
            for queue in self._chunks.values():
                await queue.put(None)

    async def _split(self, name: Stream, queue: asyncio.Queue[bytes | None]) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        try:
            async for line in split_lines(chunks()):
                await self._queue.put((name, line))
        finally:
            await self._queue.put(EOF)

    async def _reap(self) -> None:
        try:
            try:
                self._code = await self.api.wait(self.container)
            except SandboxUnavailable as e:
                log.error("container %s: lost track of it: %s", self.container[:12], e)
                self._code = -1
            self._exited.set()
            # What the container wrote before it ended may still be on its way.
            await asyncio.wait({self._demux}, timeout=5)
            await self._attachment.close()
            await self._on_exit()
        finally:
            self._exited.set()
            self._cleaned.set()

    def lines(self) -> AsyncIterator[tuple[Stream, bytes]]:
        return queued_lines(self._queue, len(self._readers))

    async def send(self, data: bytes) -> None:
        await self._attachment.send(data)

    async def close_stdin(self) -> None:
        await self._attachment.close_stdin()

    async def wait(self) -> int:
        await self._exited.wait()
        await self._cleaned.wait()
        assert self._code is not None
        return self._code

    async def stop(self, grace: float) -> int:
        """SIGTERM the container, wait ``grace`` seconds, then SIGKILL it."""
        if not self._exited.is_set():
            await self.api.kill(self.container, "SIGTERM")
            try:
                await asyncio.wait_for(self._exited.wait(), grace)
            except TimeoutError:
                try:
                    await self.api.kill(self.container, "SIGKILL")
                except SandboxUnavailable:
                    # For SIGKILL the daemon answers once the container has stopped; when it
                    # is removed first (the reaper), podman drops the connection instead.
                    if not self._exited.is_set():
                        raise
        return await self.wait()
