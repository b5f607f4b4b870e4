"""How much a directory holds: the worktree's size, checked against its cap while the agent
runs (``TELECODER_WORKTREE_MAX_BYTES``)."""

from __future__ import annotations

import os
from pathlib import Path


def size_of(root: Path, stop_at: int | None = None) -> int:
    """Bytes of the files below ``root`` (links not followed); counting stops once past
    ``stop_at``, since then the answer is only "too much"."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        if stop_at is not None and total > stop_at:
            return total
    return total
