"""A setup-cache entry's files: what they take on disk, and the building worktree's path they
hold, found when the entry is made and rewritten to the new worktree's on restore (``setupcache``).

A venv holds the absolute path of the worktree it was built in (shebangs, ``pyvenv.cfg``, an
editable install's ``.pth`` and finder files, absolute symlinks): only the files and symlinks
that hold it are rewritten (a binary file only when the paths have the same length; never a
``.pyc``, whose source path Python sets on import).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)


def safe(rel: str) -> bool:
    """Whether ``rel`` is a path inside the worktree (relative, no ``..``, not ``.git``)."""
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts and rel != ".git"


def blocks(path: Path) -> int:
    """The bytes ``path`` itself takes on disk (not what a directory holds)."""
    return path.lstat().st_blocks * 512


def scan(root: Path, build_path: str) -> dict[str, Any]:
    """The entry's size (its files' bytes, and ``disk``: the blocks of everything under
    ``root``, ``root`` included, each inode once as ``du`` counts), and the files and symlinks
    under ``root`` that hold ``build_path``."""
    needle = build_path.encode()
    size = 0
    disk = blocks(root)
    inodes: set[tuple[int, int]] = set()
    texts: list[str] = []
    binaries: list[str] = []
    links: list[str] = []
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory, name)
            info = path.lstat()
            inode = (info.st_dev, info.st_ino)
            if info.st_nlink == 1 or inode not in inodes:  # a hardlinked file once
                if info.st_nlink > 1:
                    inodes.add(inode)
                disk += info.st_blocks * 512
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                if build_path in os.readlink(path):
                    links.append(rel)
            elif stat.S_ISREG(info.st_mode):
                size += info.st_size
                if name.endswith(".pyc"):  # Python fixes a cached module's path on import
                    continue
                found, binary = _holds(path, needle)
                if found:
                    (binaries if binary else texts).append(rel)
    return {
        "size": size,
        "disk": disk,
        "rewrite": texts,
        "rewrite_binary": binaries,
        "links": links,
    }


def _holds(path: Path, needle: bytes, chunk: int = 1 << 20) -> tuple[bool, bool]:
    """Whether the file holds ``needle``, and whether it is binary (has a NUL byte); read in
    chunks, so a large file is never held whole."""
    found = binary = False
    tail = b""
    with path.open("rb") as f:
        while block := f.read(chunk):
            data = tail + block
            found = found or needle in data
            binary = binary or b"\0" in block
            if found and binary:
                break
            tail = data[-len(needle) :]
    return found, binary


def rewrite(worktree: Path, manifest: Mapping[str, Any], new: str) -> None:
    """Point the restored files and symlinks that held the build's path at ``new``."""
    old = str(manifest["build_path"])
    if old == new:
        return
    same_length = len(old.encode()) == len(new.encode())
    files = list(manifest.get("rewrite", ()))
    if same_length:
        files += manifest.get("rewrite_binary", ())
    elif manifest.get("rewrite_binary"):
        kept = len(manifest["rewrite_binary"])
        log.info("setup cache: %d binary files keep the build path", kept)
    for rel in files:
        if not safe(rel):
            continue
        path = worktree / rel
        if path.is_symlink() or not path.is_file():
            continue
        path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))
    for rel in manifest.get("links", ()):
        path = worktree / rel
        if not safe(rel) or not path.is_symlink():
            continue
        target = os.readlink(path).replace(old, new)
        path.unlink()
        path.symlink_to(target)
