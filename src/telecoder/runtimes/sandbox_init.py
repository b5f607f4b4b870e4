"""Runs first inside a sandbox that has a network policy: bridges loopback ports to the egress
proxy's Unix socket, then starts the command and exits with its status.

Run as a script by the sandbox's own Python (``python3 -I -S sandbox_init.py ...``): it imports
nothing but the standard library and nothing of TeleCoder. Its listening sockets are bound
before the command starts, so the command's first connection never races them.

    sandbox_init.py --socket PATH --proxy PORT [--forward HOST:PORT ...] -- COMMAND ...

``--proxy PORT``: 127.0.0.1:PORT is the HTTP proxy (bytes passed to the socket as they are).
``--forward HOST:PORT``: HOST:PORT inside reaches HOST:PORT outside through a ``CONNECT``
tunnel, for clients that do not use a proxy for loopback addresses (model endpoints).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading

CHUNK = 1 << 16


def pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def tunnel(path: str, client: socket.socket, connect_to: str | None) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
        if connect_to is not None:
            upstream.sendall(
                f"CONNECT {connect_to} HTTP/1.1\r\nHost: {connect_to}\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                data = upstream.recv(4096)
                if not data:
                    return
                head += data
            status, _, rest = head.partition(b"\r\n\r\n")
            if b" 200 " not in status.split(b"\r\n", 1)[0] + b" ":
                return
            if rest:
                client.sendall(rest)
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


def serve(listener: socket.socket, path: str, connect_to: str | None) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=tunnel, args=(path, client, connect_to), daemon=True).start()


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    return listener


def main(args: list[str]) -> int:
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    path = ""
    listeners: list[tuple[socket.socket, str | None]] = []
    i = 0
    while i < len(options):
        name, value = options[i], options[i + 1]
        i += 2
        if name == "--socket":
            path = value
        elif name == "--proxy":
            listeners.append((listen("127.0.0.1", int(value)), None))
        elif name == "--forward":
            host, _, port = value.rpartition(":")
            host = host.strip("[]")
            listeners.append((listen(host, int(port)), value))
    child = os.fork()
    if child == 0:
        for listener, _ in listeners:
            listener.close()
        # Python ignores these; the command must get them as any program would (`yes | head`).
        for ignored in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(ignored, signal.SIG_DFL)
        try:
            os.execvp(command[0], command)
        except OSError as e:
            os.write(2, f"{command[0]}: {e.strerror}\n".encode())
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: os.kill(child, number))
    for listener, connect_to in listeners:
        threading.Thread(target=serve, args=(listener, path, connect_to), daemon=True).start()
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main(sys.argv[1:]))
