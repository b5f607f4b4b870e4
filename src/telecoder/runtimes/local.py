"""The local runtime: the engine as a subprocess in its own process group.

stdin is /dev/null unless the engine sends input; stdout and stderr are read in chunks and split
into lines of any length (up to ``MAX_LINE`` bytes, beyond which a line is cut, never buffered
whole). Stopping signals the whole group — SIGTERM, a grace period, then SIGKILL — so the
agent's own children go too; when the engine exits by itself, whatever it left behind in its
group is killed, so nothing holds its output pipes open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from telecoder.protocols import Confinement, Stream

CHUNK = 1 << 16
MAX_LINE = 32 << 20  # 32 MiB: a line longer than this is cut, the rest of it dropped
QUEUED = 1024  # lines read and not yet taken, past which the output pipes are not read
EOF = object()
# If the worker dies (even by SIGKILL), the engine it started gets SIGKILL too.
_SETPRIV = shutil.which("setpriv")
_PDEATHSIG = (_SETPRIV, "--pdeathsig", "SIGKILL", "--") if _SETPRIV else ()


class LocalProcess:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        on_exit: Callable[[], Awaitable[None]] | None = None,
        exited: asyncio.Future[None] | None = None,
        output: _Protocol | None = None,
    ) -> None:
        self._proc = proc
        self._on_exit = on_exit
        self._exit = exited  # done when the process exited (``start`` gives it)
        self._output = output  # the lines, split as the pipes deliver them (``start`` gives it)
        self._cleaned = asyncio.Event()
        self._queue: asyncio.Queue[tuple[Stream, bytes] | object] = asyncio.Queue(maxsize=QUEUED)
        self._readers = []
        if output is None:  # a process started some other way: a reader task per stream
            self._readers = [
                asyncio.create_task(self._read("stdout", proc.stdout)),
                asyncio.create_task(self._read("stderr", proc.stderr)),
            ]
        self._reaper = asyncio.create_task(self._reap())

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def _read(self, name: Stream, stream: asyncio.StreamReader | None) -> None:
        try:
            if stream is not None:
                async for line in split_lines(chunks(stream)):
                    await self._queue.put((name, line))
        finally:
            await self._queue.put(EOF)

    async def _exited(self) -> int:
        """The engine's exit status, as soon as it exits.

        ``Process.wait()`` also waits for the output pipes to close, which a child left running
        in the background can hold open for ever; the return code is known earlier: the child
        watcher reaps the engine and tells the protocol (``process_exited``), pipes or not.
        No polling: an engine that runs for an hour costs nothing until it ends.
        """
        if self._exit is not None:
            await asyncio.shield(self._exit)
        delay = 0.002  # a process started some other way: poll its return code
        while (code := self._proc.returncode) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    async def _reap(self) -> None:
        await self._exited()
        # The engine is gone; anything it left running in its group must not outlive it.
        self._signal_group(signal.SIGKILL)
        try:
            if self._on_exit is not None:
                await self._on_exit()
        finally:
            self._cleaned.set()

    def lines(self) -> AsyncIterator[tuple[Stream, bytes]]:
        if self._output is not None:
            return self._output.lines()
        return queued_lines(self._queue, len(self._readers))

    async def send(self, data: bytes) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            return
        stdin.write(data)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.drain()

    async def close_stdin(self) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await stdin.wait_closed()

    async def wait(self) -> int:
        code = await self._exited()
        await self._cleaned.wait()
        return code

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, wait ``grace`` seconds, then SIGKILL it."""
        if self._proc.returncode is None:
            self.terminate()
            try:
                await asyncio.wait_for(self._exited(), grace)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        code = await self._exited()
        self._signal_group(signal.SIGKILL)
        await self._cleaned.wait()
        return code

    def terminate(self) -> None:
        """Ask the engine to stop (SIGTERM to its group); ``stop`` kills it after the grace."""
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own protocol of ``create_subprocess_exec``, which also tells when the process
    exited (its return code known), apart from when its pipes closed, and splits stdout and
    stderr into lines as the pipes deliver them: a line costs no wake-up of a reader task, only
    of the one that reads ``lines()``. Past ``QUEUED`` lines waiting, the pipes are not read
    until half of them are taken."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._splitters = {1: LineSplitter(), 2: LineSplitter()}
        self._names: dict[int, Stream] = {1: "stdout", 2: "stderr"}
        self._waiting: collections.deque[tuple[Stream, bytes]] = collections.deque()
        self._open = {1, 2}  # the streams not at their end yet
        self._wanted: asyncio.Future[None] | None = None  # the reader waits for a line
        self._paused = False
        self._pipes: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._pipes = transport

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        splitter = self._splitters.get(fd)
        if splitter is None:
            super().pipe_data_received(fd, data)
            return
        name = self._names[fd]
        chunk = data if isinstance(data, bytes) else data.encode()
        self._waiting.extend((name, line) for line in splitter.feed(chunk))
        if self._waiting:
            self._wake()
            if len(self._waiting) >= QUEUED:
                self._pause(True)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        splitter = self._splitters.get(fd)
        if splitter is not None and fd in self._open:
            self._waiting.extend((self._names[fd], line) for line in splitter.end())
            self._open.discard(fd)
            self._wake()
        super().pipe_connection_lost(fd, exc)

    def _wake(self) -> None:
        if self._wanted is not None and not self._wanted.done():
            self._wanted.set_result(None)

    def _pause(self, pause: bool) -> None:
        if self._paused == pause or self._pipes is None:
            return
        self._paused = pause
        for fd in self._open:
            pipe = self._pipes.get_pipe_transport(fd)
            if not isinstance(pipe, asyncio.ReadTransport):
                continue
            if pause:
                pipe.pause_reading()
            else:
                pipe.resume_reading()

    async def lines(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """Every line of stdout and stderr, each stream's in order, until both have ended."""
        waiting = self._waiting
        while True:
            while waiting:
                item = waiting.popleft()
                if self._paused and len(waiting) <= QUEUED // 2:
                    self._pause(False)
                yield item
            if not self._open:
                return
            self._wanted = self._loop.create_future()
            try:
                await self._wanted
            finally:
                self._wanted = None


async def chunks(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await stream.read(CHUNK):
        yield chunk


async def queued_lines(
    queue: asyncio.Queue[tuple[Stream, bytes] | object], streams: int
) -> AsyncIterator[tuple[Stream, bytes]]:
    """The lines readers put on ``queue`` until each of the ``streams`` has put ``EOF``."""
    while streams:
        item = await queue.get()
        if item is EOF:
            streams -= 1
            continue
        yield item  # type: ignore[misc]


async def split_lines(source: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines of ``source`` without their line ending; no limit but ``MAX_LINE``."""
    splitter = LineSplitter()
    async for chunk in source:
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.end():
        yield line


class LineSplitter:
    """Lines of a stream given in chunks, without their line ending; a line longer than
    ``MAX_LINE`` is cut there and the rest of it dropped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._dropping = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` ends (what follows its last line ending waits for more)."""
        lines: list[bytes] = []
        buffer = self._buffer
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if not self._dropping:
                buffer += chunk[start:end]
                del buffer[MAX_LINE:]
                lines.append(_finish(buffer))
            buffer.clear()
            self._dropping = False
            start = end + 1
        if not self._dropping:
            buffer += chunk[start:]
            if len(buffer) > MAX_LINE:
                del buffer[MAX_LINE:]
                lines.append(_finish(buffer))
                buffer.clear()
                self._dropping = True
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the stream ended without a line ending."""
        lines = [_finish(self._buffer)] if self._buffer and not self._dropping else []
        self._buffer.clear()
        return lines


def _finish(buffer: bytearray) -> bytes:
    return bytes(buffer[:-1] if buffer.endswith(b"\r") else buffer)


class LocalRuntime:
    """No sandbox: the agent runs as TeleCoder's own user and sees what it sees (an explicit
    opt-out, flagged as unsafe)."""

    name = "local"
    confined = False

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin: bytes | None,
        interactive: bool,
        confinement: Confinement | None = None,
    ) -> LocalProcess:
        return await start(
            [*_PDEATHSIG, *argv], cwd=cwd, env=env, stdin=stdin, interactive=interactive
        )


async def start(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bytes | None,
    interactive: bool,
    on_exit: Callable[[], Awaitable[None]] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    kind: type[LocalProcess] = LocalProcess,
    pass_fds: Sequence[int] = (),
) -> LocalProcess:
    """Start ``argv`` in a process group of its own, its output piped, ``stdin`` written."""
    piped = stdin is not None or interactive
    # What ``asyncio.create_subprocess_exec`` does, with a protocol that tells the exit apart.
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(limit=CHUNK, loop=loop),
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE if piped else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec_fn,
        pass_fds=tuple(pass_fds),
    )
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    process = kind(proc, on_exit, protocol.exited, protocol)
    if stdin:
        await process.send(stdin)
    if piped and not interactive:
        await process.close_stdin()
    return process
