"""Searching the worktree's text files for a regular expression, within a time and a size.

Only regular files are read, opened without following links or blocking (a fifo would hang the
search, a link could lead out of the worktree); ``.git``, binary and huge files are skipped.
Matches stop at a count and at the observation's character cap. The search stops at its time
limit: between files by a check, and inside a regular expression that backtracks for ever by a
signal (``re`` checks for them while matching), so a pattern cannot hang the agent.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BINARY_SNIFF = 8192  # bytes looked at for a NUL to call a file binary
_MATCH_CAP = 200  # matches one search returns
_MATCH_LINE_CAP = 300  # characters of a matching line shown
_FILE_CAP = 5_000_000  # bytes: larger files are not searched


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    matches: list[str]  # path:line:text
    truncated: bool  # more matches were left out (or time ran out)
    timed_out: bool


class OutOfTime(Exception):
    """A search ran past its time."""


def search(
    target: Path,
    regex: re.Pattern[str],
    *,
    glob: str | None,
    show: Callable[[Path], str],
    cap: int,
    seconds: float,
) -> Found:
    """The lines of the file ``target``, or of the files under it (those matching ``glob``,
    by path or name), that ``regex`` matches; each file named by ``show``."""
    files = [target] if target.is_file() else _files(target)
    matches: list[str] = []
    try:
        with _interrupted_after(seconds):
            deadline = time.monotonic() + seconds
            truncated = _scan(files, regex, glob, show, cap, matches, deadline)
    except OutOfTime:
        return Found(matches=matches, truncated=True, timed_out=True)
    return Found(matches=matches, truncated=truncated, timed_out=False)


def _scan(
    files: Iterable[Path],
    regex: re.Pattern[str],
    glob: str | None,
    show: Callable[[Path], str],
    cap: int,
    matches: list[str],
    deadline: float,
) -> bool:
    """Add the matching lines of ``files`` to ``matches``; whether they were cut short."""
    budget = cap
    for file in files:
        if time.monotonic() > deadline:
            raise OutOfTime
        shown = show(file)
        if glob and not (fnmatch.fnmatch(shown, glob) or fnmatch.fnmatch(file.name, glob)):
            continue
        for number, line in _text_lines(file):
            if not regex.search(line):
                continue
            match = f"{shown}:{number}:{line[:_MATCH_LINE_CAP]}"
            budget -= len(match) + 4
            if len(matches) >= _MATCH_CAP or budget < 0:
                return True
            matches.append(match)
    return False


@contextlib.contextmanager
def _interrupted_after(seconds: float) -> Iterator[None]:
    """Raise ``OutOfTime`` in the body after ``seconds``: a regular expression that backtracks
    for ever can only be stopped by a signal (``re`` checks for them while matching). Only in
    the main thread, where signals arrive (elsewhere the check between files bounds the search).
    A timer already set (a test runner's, say) is put back with what was left of it, or left
    alone when it expires first."""
    remaining, interval = signal.getitimer(signal.ITIMER_REAL)
    if threading.current_thread() is not threading.main_thread() or 0 < remaining <= seconds:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
            if remaining:
                left = remaining - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), interval)


def _files(directory: Path) -> Iterator[Path]:
    """The files under ``directory``, sorted; .git (a directory, or a checkout's pointer file)
    skipped, links to directories not entered."""
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(name for name in dirs if name != ".git")
        yield from (Path(current, name) for name in sorted(files) if name != ".git")


def _text_lines(file: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of a text file; nothing for a link, a fifo or device, a binary, huge
    or unreadable file (opened without following links or blocking, then checked)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _FILE_CAP:
            return
        try:
            data = handle.read()
        except OSError:
            return
    if b"\0" in data[:BINARY_SNIFF]:
        return
    yield from enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1)
