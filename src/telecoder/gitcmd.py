"""Running git on the host: the options and environment that keep an agent's hooks, filters and
config out of it, a lock file left by a killed git removed and the command run again,
credentials scrubbed from git's messages, and the host-wide lock of a mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from telecoder import private
from telecoder.errors import WorkspaceError
from telecoder.urls import is_url as is_url  # where the others look for it

# Options on every git command in a worktree: never run a hook, an fsmonitor, an external diff
# or a textconv (the agent may have written any of them), never sign, never prompt; the
# worktree's files belong to the sandbox's uid, which git must not take as a reason to stop.
SAFE = (
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
    "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false", "-c", "diff.external=",
    "-c", "safe.directory=*", "-c", "core.untrackedCache=false",
)  # fmt: skip
# What git reads besides the repository's own config when it works on a worktree on the host:
# nothing (no global or system config, whose filters and drivers a .gitattributes could name).
ISOLATED = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
SHA = re.compile(r"^[0-9a-f]{7,64}$")

log = logging.getLogger(__name__)


def scrub(text: str) -> str:
    """Remove credentials embedded in URLs from git's messages."""
    return _CREDENTIALS.sub(r"\1***@", text)


# Background git (the warm pool's checkouts): the lowest CPU priority, and the idle I/O class
# where the disk's scheduler has one; a session's own git always goes first.
LOW_PRIORITY = (
    *(("nice", "-n", "19") if shutil.which("nice") else ()),
    *(("ionice", "-c", "3") if shutil.which("ionice") else ()),
)

_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GCM_INTERACTIVE": "never",
    "LC_ALL": "C",
    "GIT_OPTIONAL_LOCKS": "0",
}


def git_environ(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_GIT_ENV)
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if extra:
        env.update(extra)
    return env


async def git_status(
    cwd: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    unlock: Path | None = None,
    niced: bool = False,
) -> tuple[int, str, str]:
    """Run git. ``unlock``: a mirror whose lock the caller holds, so any git lock file in it is
    one that a killed git left behind; such a lock is removed and the command run again.
    ``niced``: at a low CPU priority (background work that must not slow sessions down)."""
    for _ in range(_UNLOCK_TRIES):
        code, out, err = await _run_git(cwd, args, env, stdin, niced)
        stale = _stale_lock(err, unlock, cwd) if code != 0 and unlock is not None else None
        if stale is None:
            break
        log.warning("removing %s, left behind by a git that was killed", stale)
        stale.unlink(missing_ok=True)
    return code, out, err


def _stale_lock(err: str, inside: Path, cwd: Path | None) -> Path | None:
    match = LOCKED.search(err)
    if match is None:
        return None
    lock = Path(match["lock"] or match["config"] + ".lock")
    lock = (cwd / lock if cwd is not None else lock).resolve()
    root = inside.resolve()
    return lock if lock.is_relative_to(root) and lock.is_file() else None


async def _run_git(
    cwd: Path | None,
    args: tuple[str, ...],
    env: Mapping[str, str] | None,
    stdin: bytes | None,
    niced: bool = False,
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *(LOW_PRIORITY if niced else ()),
        "git",
        *args,
        cwd=cwd,
        env=git_environ(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(stdin)
    except asyncio.CancelledError:  # a stopped task leaves no git running behind it
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    code = proc.returncode
    assert code is not None
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# Short read-only checks (intake's: is it a repository, its remote, is it dirty, can the remote
# be read) run from threads: starting a process from the event loop costs it a fork and a child
# watcher thread each (~2x slower), which adds up when a fan-out checks 100 repositories at once.
_CHECKS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="telecoder-git-check")


async def git_check(
    cwd: Path | None, *args: str, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a short, read-only git command: (exit code, stdout, stderr)."""

    def run() -> tuple[int, str, str]:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=git_environ(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        out, err = done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
        return done.returncode, out, err

    return await asyncio.get_running_loop().run_in_executor(_CHECKS, run)


async def git_out(
    cwd: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    unlock: Path | None = None,
    niced: bool = False,
) -> str:
    code, out, err = await git_status(cwd, *args, env=env, stdin=stdin, unlock=unlock, niced=niced)
    if code != 0:
        verb = next(a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] != "-c")
        raise WorkspaceError(f"git {verb} failed: {scrub(tail(err))}")
    return out


# A lock file in the way: "Unable to create '/m/refs/remotes/origin/x.lock': File exists" (refs,
# index, packed-refs) or "could not lock config file /m/config: File exists".
LOCKED = re.compile(
    r"Unable to create '(?P<lock>[^']+\.lock)': File exists"
    r"|could not lock config file (?P<config>\S+): File exists"
)
_UNLOCK_TRIES = 10
STALE_PUSH_LOCK_SECONDS = 2.0  # a live push holds a ref lock for milliseconds


def unreadable(remote_url: str, err: str) -> str:
    message = f"cannot read {scrub(remote_url)}: {scrub(tail(err))}"
    if re.search(r"could not read Username|Authentication failed|HTTP 401", err):
        message += " (authentication required: set GITHUB_TOKEN, or use an ssh URL with a key)"
    return message


def tail(text: str, limit: int = 1000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


@contextlib.asynccontextmanager
async def host_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive lock shared by every worker process on this host."""
    private.make_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, private.FILE_MODE)
    try:
        await flock(fd, fcntl.LOCK_EX, max_delay=0.1)
        yield
    finally:
        os.close(fd)


async def flock(fd: int, operation: int, *, max_delay: float) -> None:
    """Take the ``flock`` ``operation`` (``LOCK_EX`` or ``LOCK_SH``) on ``fd``, waiting as long
    as it takes without blocking the event loop: tried every 5 ms at first, the pause doubled
    up to ``max_delay`` seconds."""
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
