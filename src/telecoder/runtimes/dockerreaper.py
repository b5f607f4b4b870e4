"""The docker runtime's lifeline: when a worker process dies, however it dies (SIGKILL
included), its containers are removed.

A container is the daemon's child, not the worker's, so nothing in the kernel ties the two.
The first spawn of a worker process starts this module as a detached process (its own session,
so killing the worker's process group spares it) that holds the read end of a pipe whose write
end only the worker holds. The read returns at end of file when the worker is gone; the reaper
then removes every container labelled with the worker's owner label and exits.

    python -m telecoder.runtimes.dockerreaper DOCKER_HOST telecoder.owner=OWNER   (stdin: the pipe)

Each spawn also sweeps the containers of dead owners on its host (``docker.sweep``): the
backstop when the reaper itself was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading

# Only the standard library at import: the reaper detaches before it loads anything else.
_lifelines: dict[tuple[str, str], int] = {}  # (daemon, label) -> the write end of the pipe
_starting = threading.Lock()


def hold(host: str, label: str) -> None:
    """Start the reaper of the containers labelled ``label`` (``key=value``) on ``host``, once
    per process."""
    with _starting:
        if (host, label) not in _lifelines:
            _lifelines[(host, label)] = _start(host, label)


def _start(host: str, label: str) -> int:
    read, write = os.pipe()  # neither end is inherited by the worker's other children
    try:
        subprocess.run(
            [sys.executable, "-m", __name__, host, label],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # holding the worker's would keep its readers waiting
            check=True,
            start_new_session=True,
        )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    return write


async def remove_all(host: str, label: str) -> None:
    from telecoder.runtimes.dockerapi import DockerAPI

    key, _, value = label.partition("=")
    api = DockerAPI(host)
    try:
        for container in await api.containers({key: value}):
            await api.remove(container["Id"])
    finally:
        await api.close()


def main(args: list[str]) -> None:
    from telecoder.errors import SandboxUnavailable

    host, label = args
    if os.fork():
        os._exit(0)  # the worker waits for this; the reaper lives on, detached
    sys.stdin.buffer.read()  # until the worker is gone
    with contextlib.suppress(SandboxUnavailable):  # nor is the daemon, then: nothing to do
        asyncio.run(remove_all(host, label))


if __name__ == "__main__":
    main(sys.argv[1:])
