"""Sockets listening inside a sandbox's network namespace, held by TeleCoder outside it.

As root, TeleCoder can enter the network namespace bubblewrap made (``setns``) from a thread of
its own, bind loopback ports there, and go back: the sandbox's processes connect to
``127.0.0.1:PORT`` and reach the egress proxy with no process of TeleCoder's inside and no
bridge to start (the alternative, ``sandbox_init``, costs an interpreter start per sandbox).
bubblewrap waits (``--block-fd``) until the ports are bound, so the command's first connection
never races them; ``--info-fd`` tells which process holds the namespaces.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def read_info(fd: int) -> int:
    """The pid of the sandbox's first process, from what bubblewrap writes to ``--info-fd``."""
    data = b""
    while b"}" not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            raise OSError("bubblewrap exited before its sandbox was made")
        data += chunk
    info = json.loads(data[: data.index(b"}") + 1])
    return int(info["child-pid"])


def listen_in(pid: int, addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Sockets listening on ``addresses`` inside the network namespace of ``pid``.

    Done in a thread made for it (``setns`` moves only the calling thread), which goes back to
    its own namespace before it ends.
    """
    made: list[socket.socket] = []
    failure: list[BaseException] = []

    def inside() -> None:
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                for host, port in addresses:
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    listener = socket.socket(family, socket.SOCK_STREAM)
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    made.append(listener)
                    _bind(listener, (host, port))
                    listener.listen(128)
                    listener.setblocking(False)
            finally:
                _setns(own)
        except BaseException as e:
            failure.append(e)
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=inside, name="telecoder-netns")
    thread.start()
    thread.join()
    if failure:
        for listener in made:
            listener.close()
        raise failure[0]
    return made


def _bind(listener: socket.socket, address: tuple[str, int], wait: float = 5.0) -> None:
    """Bind, waiting while the namespace's loopback has no address yet: bubblewrap's child
    brings ``lo`` up after it reported its pid, so on a busy machine the first bind can come
    first (EADDRNOTAVAIL)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            listener.bind(address)
            return
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")
