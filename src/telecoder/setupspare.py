"""A setup-cache entry's spare: one copy of its files made ahead of time, so that the next hit
is a rename instead of a copy.

Without copy-on-write (ext4), restoring an entry is a real copy of every file, the cost of a
hit (``node_modules``: thousands of files). So after an entry is made or restored, a copy of
its files is made in the background beside it (``<entry>/spare``), at the lowest CPU and I/O
priority, by a process of its own that outlives the session (and a ``telecoder run``): it holds
the spare's lock while it copies, so the next session on the key waits for it (a few seconds
at most: past that it copies for itself, and the spare serves the hit after) and two are never
made at once; ``cache clear`` and eviction do
not wait (the copy deletes what it wrote into a removed entry). It is written as
``.making-spare`` and renamed ``spare`` only when complete.

The next restore moves the spare's paths into its worktree (one rename each: the worktrees and
the cache are on the same filesystem under ``$TELECODER_HOME``); anywhere else (another
filesystem, a spare that went missing) it copies as before. The spare is the entry's own
private copy until then: no agent ever saw it, and what an agent does to what it was given
never reaches the entry (it was never a hardlink). An entry with a spare takes twice its size
on disk.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from telecoder.gitcmd import LOW_PRIORITY, flock

SPARE = "spare"
MAKING = ".making-spare"

# Run holding the spare's lock (taken by ``make``), in the entry's directory, its working
# directory throughout (the copy runs in a subshell): $1 is the entry, the other arguments the
# paths to copy. Nothing is done when a spare is already there. An entry removed meanwhile
# (``cache clear``, eviction: renamed ``.trash-…``, then deleted) is deleted again at the end,
# with whatever this copy wrote into it after; nothing else ever is.
_SCRIPT = (
    'cd "$1" || exit 0; shift; '
    "if [ ! -e spare ]; then "
    "rm -rf .making-spare && mkdir -m 700 .making-spare && "
    '(cd files && exec cp -a --reflink=auto --parents -t ../.making-spare -- "$@") && '
    "mv -T .making-spare spare || rm -rf .making-spare; fi; "
    'here=$(pwd -P) && cd / && case "${here##*/}" in .trash-*) rm -rf "$here";; esac; exit 0'
)


def available() -> bool:
    """Whether spares can be made here (``sh`` on the PATH)."""
    return shutil.which("sh") is not None


def make(entry: Path, lock: Path, paths: Sequence[str]) -> None:
    """Start making ``entry``'s spare of ``paths`` in the background, holding ``lock`` (the
    spare's, not the key's: the entry can be removed meanwhile); returns at once, the lock
    already held (so ``made`` waits for the copy), or nothing done when a copy holds it."""
    if not paths or not available() or (entry / SPARE).exists():
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a spare is being made under it: that one will do
            return
        argv = [*LOW_PRIORITY, "sh", "-c", _SCRIPT, "sh", str(entry), *paths]
        # Started by a shell that exits at once: the copy is nobody's child here, so it needs
        # no waiting for and goes on when this process ends. It inherits the locked file (a
        # lock belongs to the open file, not the process): held until the copy ends.
        subprocess.run(
            ["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(fd,),
            check=False,
        )
    finally:
        os.close(fd)


async def made(lock: Path, wait: float | None = None) -> bool:
    """Wait while a spare is being made under ``lock``, up to ``wait`` seconds (None: until it
    is); whether no copy is under way now."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        async with asyncio.timeout(wait):
            await flock(fd, fcntl.LOCK_SH, max_delay=0.05)
        return True
    except TimeoutError:
        return False
    finally:
        os.close(fd)


def take(entry: Path, paths: Sequence[str], worktree: Path) -> bool:
    """Move the spare's ``paths`` into ``worktree``; whether it did (False: no spare, or it
    could not be moved, and the worktree has none of them). The caller holds the key."""
    spare = entry / SPARE
    if not spare.is_dir():
        return False
    moved: list[Path] = []
    try:
        for rel in paths:
            source, target = spare / rel, worktree / rel
            if not source.exists() and not source.is_symlink():
                raise FileNotFoundError(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)  # fails across filesystems (EXDEV): copied instead
            moved.append(target)
    except OSError:
        for target in moved:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        return False
    finally:
        shutil.rmtree(spare, ignore_errors=True)
    return True
