"""The local runtime: real subprocesses in their own process group."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from telecoder.protocols import Stream
from telecoder.runtimes import local
from telecoder.runtimes.local import LocalProcess, LocalRuntime
from tests.processes import alive, group_members

ENV = {"PATH": os.environ["PATH"], "LC_ALL": "C"}


async def spawn(
    argv: Sequence[str], cwd: Path, *, stdin: bytes | None = None, interactive: bool = False
) -> LocalProcess:
    return await LocalRuntime().spawn(argv, cwd=cwd, env=ENV, stdin=stdin, interactive=interactive)


async def collect(process: LocalProcess, within: float = 10) -> list[tuple[Stream, bytes]]:
    async with asyncio.timeout(within):
        return [item async for item in process.lines()]


async def wait_gone(pids: Sequence[int], pgid: int) -> None:
    deadline = time.monotonic() + 2
    while any(alive(p) for p in pids) or group_members(pgid):
        assert time.monotonic() < deadline, f"still running: {group_members(pgid)}"
        await asyncio.sleep(0.01)


async def test_stdin_is_dev_null(tmp_path: Path) -> None:
    started = time.monotonic()
    process = await spawn(["cat"], tmp_path)
    assert await collect(process, within=5) == []
    assert await process.wait() == 0
    assert time.monotonic() - started < 3
    process = await spawn(["readlink", "/proc/self/fd/0"], tmp_path)
    assert await collect(process) == [("stdout", b"/dev/null")]
    assert await process.wait() == 0


async def test_stdin_bytes_are_written_then_closed(tmp_path: Path) -> None:
    process = await spawn(["cat"], tmp_path, stdin=b"one\ntwo\n")
    assert await collect(process) == [("stdout", b"one"), ("stdout", b"two")]
    assert await process.wait() == 0


async def test_interactive_stdin_stays_open_until_closed(tmp_path: Path) -> None:
    process = await spawn(["cat"], tmp_path, interactive=True)
    lines = process.lines()
    await process.send(b"ping\n")
    async with asyncio.timeout(5):
        assert await anext(lines) == ("stdout", b"ping")
    await process.send(b"pong\n")
    async with asyncio.timeout(5):
        assert await anext(lines) == ("stdout", b"pong")
    await process.close_stdin()
    async with asyncio.timeout(5):
        assert [item async for item in lines] == []
    assert await process.wait() == 0


async def test_stdout_and_stderr_lines_and_exit_code(tmp_path: Path) -> None:
    script = "echo out1; echo err1 >&2; printf 'no newline at end'; exit 7"
    process = await spawn(["sh", "-c", script], tmp_path)
    lines = await collect(process)
    assert [line for stream, line in lines if stream == "stdout"] == [
        b"out1",
        b"no newline at end",
    ]
    assert [line for stream, line in lines if stream == "stderr"] == [b"err1"]
    assert await process.wait() == 7


async def test_a_10_mb_line_arrives_whole(tmp_path: Path) -> None:
    size = 10 << 20
    code = f"import sys; w = sys.stdout.buffer.write; w(b'x' * {size} + b'\\n'); w(b'after\\n')"
    process = await spawn([sys.executable, "-c", code], tmp_path)
    lines = await collect(process, within=20)
    assert [len(line) for _, line in lines] == [size, 5]
    assert lines[0][1] == b"x" * size
    assert lines[1] == ("stdout", b"after")
    assert await process.wait() == 0


@pytest.mark.parametrize("size", [5_000, 300_000])  # within one read, and over many
async def test_a_line_over_max_line_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(local, "MAX_LINE", 1000)
    code = (
        "import sys; w = sys.stdout.buffer.write; "
        f"w(b'a' * {size} + b'\\nshort\\n' + b'b' * {size} + b'\\n'); w(b'end\\n')"
    )
    process = await spawn([sys.executable, "-c", code], tmp_path)
    lines = [line for _, line in await collect(process)]
    assert lines == [b"a" * 1000, b"short", b"b" * 1000, b"end"]
    assert await process.wait() == 0


async def test_output_not_taken_is_not_read_past_a_bound(tmp_path: Path) -> None:
    """Lines no one takes pause the pipes (the agent then blocks on its writes) rather than
    pile up in the worker; once taken, every line arrives, in order."""
    count = 300_000  # 2 MB of short lines: more than a pipe and one read hold
    process = await spawn(["seq", str(count)], tmp_path)
    output = process._output
    assert output is not None
    for _ in range(1000):  # nothing taken yet: the pipes pause (within 10 s)
        if output._paused:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # and stay paused
    assert output._paused
    assert local.QUEUED <= len(output._waiting) < count // 2
    lines = [int(line) for _, line in await collect(process, within=30)]
    assert lines == list(range(1, count + 1))
    assert await process.wait() == 0


async def test_non_utf8_bytes_arrive_as_bytes(tmp_path: Path) -> None:
    process = await spawn(["printf", "\\377\\376\\000x\\r\\nplain\\n"], tmp_path)
    assert await collect(process) == [("stdout", b"\xff\xfe\x00x"), ("stdout", b"plain")]
    assert await process.wait() == 0


async def test_a_background_child_does_not_hold_the_output_open(tmp_path: Path) -> None:
    started = time.monotonic()
    process = await spawn(["sh", "-c", "sleep 30 & echo $!; echo done"], tmp_path)
    lines = await collect(process, within=5)
    assert time.monotonic() - started < 3
    child = int(lines[0][1])
    assert lines[1] == ("stdout", b"done")
    assert await process.wait() == 0
    await wait_gone([child], process.pid)


async def test_the_exit_code_is_known_while_an_escaped_child_holds_the_pipes(
    tmp_path: Path,
) -> None:
    # setsid: the child leaves the group, so nothing kills it and the pipes stay open. The
    # parent exits only once the child has left (it writes its pid after setsid ran): under
    # load, an exit before that let the group kill take the child too.
    script = (
        "setsid sh -c 'echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 30' & "
        "while [ ! -s pid ]; do sleep 0.01; done; cat pid; exit 5"
    )
    process = await spawn(["sh", "-c", script], tmp_path)
    lines = process.lines()
    async with asyncio.timeout(5):
        _, pid = await anext(lines)
    try:
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert await process.wait() == 5
        assert time.monotonic() - started < 1
        assert alive(int(pid))  # still holding the pipes: wait() did not wait for them
    finally:
        os.kill(int(pid), 9)
    async with asyncio.timeout(5):
        assert [item async for item in lines] == []


async def test_stop_sends_sigterm_to_the_group(tmp_path: Path) -> None:
    process = await spawn(["sh", "-c", "sleep 30 & echo $!; wait"], tmp_path)
    lines = process.lines()
    async with asyncio.timeout(5):
        _, pid = await anext(lines)
    started = time.monotonic()
    code = await process.stop(grace=5)
    assert time.monotonic() - started < 2  # TERM was enough: no need to wait for the grace
    assert code == -15
    await wait_gone([int(pid), process.pid], process.pid)
    async with asyncio.timeout(5):
        assert [item async for item in lines] == []


async def test_stop_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    # Both the shell and its child ignore TERM (an ignored signal stays ignored across exec).
    script = "trap '' TERM; sleep 30 & echo $!; wait; echo still here"
    process = await spawn(["sh", "-c", script], tmp_path)
    lines = process.lines()
    async with asyncio.timeout(5):
        _, pid = await anext(lines)
    grace = 0.5
    started = time.monotonic()
    code = await process.stop(grace=grace)
    elapsed = time.monotonic() - started
    assert grace <= elapsed < grace + 1
    assert code == -9
    await wait_gone([int(pid), process.pid], process.pid)
    async with asyncio.timeout(5):
        assert [line async for _, line in lines] == []


async def test_stop_after_exit_returns_the_exit_code(tmp_path: Path) -> None:
    process = await spawn(["sh", "-c", "exit 3"], tmp_path)
    await collect(process)
    assert await process.stop(grace=5) == 3
    assert await process.wait() == 3


async def test_environment_and_working_directory(tmp_path: Path) -> None:
    process = await LocalRuntime().spawn(
        ["sh", "-c", 'pwd; echo "$ONLY_THIS"; echo "${HOME:-unset}"'],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "ONLY_THIS": "yes"},
        stdin=None,
        interactive=False,
    )
    lines = [line for _, line in await collect(process)]
    assert lines == [str(tmp_path).encode(), b"yes", b"unset"]
    assert await process.wait() == 0
