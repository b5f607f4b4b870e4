"""Directories and files for TeleCoder's user alone: 0700 and 0600, whatever the umask.

TeleCoder's home holds prompts, code, agents' logs and the database. The ``telecoder`` command
also sets the process umask to 077; these helpers keep a library user (who embeds the store, the
workspace or the raw log) just as safe. Nothing here relies on group or other bits: a runtime
that lets another uid into a worktree or an engine home does so by ownership.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dir(path: Path) -> Path:
    """``mkdir -p path``, each directory it creates 0700; directories already there are left as
    they are (a home the user made, or ``/tmp``, is theirs to set)."""
    missing: list[Path] = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process
        directory.chmod(DIR_MODE)  # the umask may have taken bits off mkdir's mode
    return path


def create_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 if it does not exist; an existing file is left alone."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    return path


def open_append(path: Path) -> IO[str]:
    """``path`` opened for appending UTF-8 text, created 0600 if new."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    return os.fdopen(fd, "a", encoding="utf-8")
