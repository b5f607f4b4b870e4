"""Running one shell command for the agent: its own process group, a deadline, capped output.

The command runs as ``/bin/sh -c`` in a new session, so everything it starts is in one process
group that can be signalled at once: on timeout SIGTERM, then SIGKILL after a grace period;
when the shell ends, whatever it left running in the background is killed too (it would hold
the output pipe open and outlive the step). Output (stdout and stderr merged) is kept within a
cap while it is read, head and tail, so a command printing gigabytes costs no memory.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a timed-out command
DRAIN_GRACE = 1.0  # seconds to read what a finished command's group still writes


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    exit_code: int  # negative: killed by that signal
    output: str
    timed_out: bool
    truncated: bool  # part of the output's middle was left out


def without_model_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the agent's own model credentials: the commands the model runs need no
    key to the model (``*_API_KEY``, ``*_AUTH_TOKEN``, and ``OLLAMA_HOST``, whose URL carries
    the gateway ticket), and a command printing its environment must not show one."""
    return {
        name: value
        for name, value in env.items()
        if not name.endswith(("_API_KEY", "_AUTH_TOKEN")) and name != "OLLAMA_HOST"
    }


class _HeadTail:
    """A command's output kept within ``cap`` bytes: its head and its tail."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap - cap // 2
        self.tail_cap = cap // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = max(0, self.head_cap - len(self.head))
        self.head += chunk[:room]
        self.tail += chunk[room:]
        if len(self.tail) > self.tail_cap:
            del self.tail[: len(self.tail) - self.tail_cap]

    def text(self) -> tuple[str, bool]:
        omitted = self.total - len(self.head) - len(self.tail)
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if omitted <= 0:
            return (self.head + self.tail).decode("utf-8", errors="replace"), False
        return f"{head}\n[... {omitted} bytes of output omitted ...]\n{tail}", True


def run_shell(
    command: str, *, cwd: Path, timeout: float, cap: int, env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run ``command`` in ``cwd``, in its own process group, for at most ``timeout`` seconds;
    keep about ``cap`` bytes of its output. ``env``: its environment (default: this process's).

    The shell is detected as finished without being reaped (``WNOWAIT``), so its pid, the
    group's id, cannot be reused while the group is signalled.
    """
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    output = _HeadTail(cap)
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + timeout
    timed_out = eof = False
    stage, stage_end = "running", deadline
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            exited = _exited(process.pid)
            if stage == "running" and (exited or now >= deadline):
                if exited:
                    _signal_group(process.pid, signal.SIGKILL)
                    stage, stage_end = "draining", now + DRAIN_GRACE
                else:
                    timed_out = True
                    _signal_group(process.pid, signal.SIGTERM)
                    stage, stage_end = "terminating", now + KILL_GRACE
            elif stage == "terminating" and (exited or now >= stage_end):
                _signal_group(process.pid, signal.SIGKILL)
                stage, stage_end = "draining", now + DRAIN_GRACE
            elif stage == "draining" and (eof or now >= stage_end):
                break
            if eof:  # the pipe is closed but the shell still runs: wait for it (or the deadline)
                time.sleep(0.02)
                continue
            if not selector.select(timeout=0.05):
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                output.add(chunk)
            else:
                eof = True
    process.stdout.close()
    exit_code = process.wait()
    text, truncated = output.text()
    return CommandResult(exit_code=exit_code, output=text, timed_out=timed_out, truncated=truncated)


def _exited(pid: int) -> bool:
    """Whether the process has ended, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pid, signum)
