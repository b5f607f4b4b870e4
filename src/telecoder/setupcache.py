"""The setup cache: a repository's ``setup:`` commands run once per key, their result restored
into every later worktree of that key.

The key is a sha256 of the repository (its remote, credentials scrubbed), the setup commands,
the runtime, and the content of the files the setup depends on: the lockfiles and manifests the
worktree tracks (``DEFAULT_FILES``, at any depth) and the paths or globs ``.telecoder.yml`` names
in ``setup.cache_key``, by their blob ids (``git ls-files -s``: no file is read).

What is cached: the ignored paths the setup created (``git status --ignored`` before and after:
``.venv/``, ``node_modules/``, ``build/``, ``src/pkg.egg-info/``). An entry is built in a
temporary directory beside the others, its manifest written last, then renamed into place: a
crash leaves no usable half entry (a leftover build directory is removed by the next build of its
key). A lock file per key (``flock``) makes two sessions on a cold key build it once; the second
waits, then restores. An entry is in use while its lock is held: eviction and ``clear`` skip it.

Restore moves in the entry's spare, a copy made in the background after its last use
(``setupspare``), or else copies (``cp -a --reflink=auto``: copy-on-write where the filesystem
can, a real copy elsewhere); never hardlinks: what an agent does to its restored files never
reaches the cache. The files that hold the building worktree's path are recorded when the entry
is made and rewritten to the new worktree's on restore (``setupfiles``).

``max_bytes`` (``TELECODER_CACHE_MAX``) bounds the real disk use: each entry's blocks with its
spare's (``SetupCache``).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from telecoder import private, setupfiles, setupspare
from telecoder.errors import CacheEntryNotFound, WorkspaceError
from telecoder.gitcmd import ISOLATED, git_out, scrub
from telecoder.worktree import Worktree

log = logging.getLogger(__name__)

DEFAULT_FILES = (
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "package.json",
    "poetry.lock",
    "uv.lock",
    "Pipfile.lock",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "requirements*.txt",
    "Cargo.lock",
    "go.sum",
    "Gemfile.lock",
    "composer.lock",
)
MANIFEST = "manifest.json"
FILES = "files"
_KEY = re.compile(r"^[0-9a-f]{64}$")
_BUILD = ".build-"
_TRASH = ".trash-"
# A restore waits this long for a spare still being made (at idle priority: on a busy machine it
# may crawl), then copies the entry's files itself.
SPARE_WAIT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One cache entry, as its manifest describes it."""

    key: str
    path: Path
    size: int  # bytes it takes on disk (du), its spare included: what TELECODER_CACHE_MAX bounds
    files_size: int  # bytes of its files: what a restore puts in the worktree
    created: float
    used: float  # last restored (or made)
    paths: tuple[str, ...]  # what it restores, relative to the worktree
    repo: str
    commands: tuple[str, ...]
    in_use: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "size": self.size,
            "files_size": self.files_size,
            "created": self.created,
            "used": self.used,
            "paths": list(self.paths),
            "repo": self.repo,
            "commands": list(self.commands),
            "in_use": self.in_use,
        }


class Hold:
    """A key's lock, held until ``release``."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class Restored:
    key: str
    paths: tuple[str, ...]
    size: int
    duration_ms: int


def cache_key(*, repo: str, commands: Sequence[str], runtime: str, files: Mapping[str, str]) -> str:
    """The key of a setup: its repository, commands, runtime and dependency files' content."""
    payload = {
        "repo": scrub(repo),
        "commands": list(commands),
        "runtime": runtime,
        "files": sorted(files.items()),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def depends_on(path: str, extra: Sequence[str] = ()) -> bool:
    """Whether the tracked file ``path`` is one a setup's key includes."""
    name = PurePosixPath(path).name
    if any(fnmatch(name, pattern) for pattern in DEFAULT_FILES):
        return True
    for pattern in extra:
        pattern = pattern.strip("/")
        if path == pattern or path.startswith(pattern + "/") or fnmatch(path, pattern):
            return True
    return False


async def dependency_files(wt: Worktree, extra: Sequence[str] = ()) -> dict[str, str]:
    """The tracked files the key depends on, each with its blob id."""
    out = await git_out(wt.path, *wt.git(), "ls-files", "-s", "-z", env=ISOLATED)
    found: dict[str, str] = {}
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        if depends_on(path, extra):
            found[path] = meta.split()[1]
    return found


async def ignored(wt: Worktree) -> set[str]:
    """The ignored paths of the worktree as ``git status`` shows them (a directory once)."""
    out = await git_out(
        wt.path, *wt.git(), "status", "--porcelain=v1", "-z", "--ignored=traditional",
        "--untracked-files=normal", env=ISOLATED,
    )  # fmt: skip
    return {r[3:].rstrip("/") for r in out.split("\0") if r.startswith("!! ")}


class SetupCache:
    """The entries under ``root`` (``$TELECODER_HOME/cache/setup``), at most ``max_bytes`` on
    disk: each entry by its real disk use (blocks, as ``du`` counts them) with its spare, which
    is counted whether or not it is there right now (one is made after every use), and the
    cache's own directories. Only a build under way (its copy) can go past it, until it ends."""

    def __init__(
        self, root: Path, max_bytes: int, *, spare_wait: float = SPARE_WAIT_SECONDS
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes  # 0: the cache is off
        self.spare_wait = spare_wait  # how long a restore waits for a spare being made

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def _spare_lock(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.spare"

    def _open_lock(self, key: str) -> int:
        private.make_dir(self.root / "locks")
        return os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT, private.FILE_MODE)

    def _try_lock(self, key: str) -> int | None:
        """The key's lock, taken without waiting; None when someone holds it."""
        fd = self._open_lock(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    async def hold(
        self,
        key: str,
        *,
        stopped: Callable[[], bool] = lambda: False,
        waiting: Callable[[], None] | None = None,
    ) -> Hold:
        """The key's exclusive lock, for every process on this host, until ``release``; while
        another session builds the entry, this one waits (``waiting`` is told once) until it is
        done, or until ``stopped`` is true (``WorkspaceError``).

        Not a context manager: an exception of the caller's (a frozen one) passes untouched."""
        fd = self._open_lock(key)
        try:
            told, delay = False, 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return Hold(fd)
                except BlockingIOError:
                    if stopped():
                        raise WorkspaceError("stopped waiting for the setup cache") from None
                    if not told and waiting is not None:
                        waiting()
                    told = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
        except BaseException:
            os.close(fd)
            raise

    # --- restore -------------------------------------------------------------------------------

    async def restore(self, key: str, worktree: Path) -> Restored | None:
        """Copy the entry's files into ``worktree``; None when there is no entry.

        The caller holds the key (``hold``)."""
        started = time.monotonic()
        entry = self.root / key
        manifest = _read_manifest(entry)
        if manifest is None:
            return None
        paths = [p for p in manifest["paths"] if setupfiles.safe(p)]
        for rel in paths:  # a fresh worktree has none of them; be sure
            _remove(worktree / rel)
        try:
            # The spare made after the last use, moved in; else (none, or still being made a
            # while from now: the machine is busy) a copy of the entry's files.
            ready = await setupspare.made(self._spare_lock(key), wait=self.spare_wait)
            if not ready or not await asyncio.to_thread(setupspare.take, entry, paths, worktree):
                await _copy(entry / FILES, paths, worktree)
            await asyncio.to_thread(setupfiles.rewrite, worktree, manifest, str(worktree))
        except BaseException:
            for rel in paths:  # no half restore: the setup runs on a clean worktree instead
                _remove(worktree / rel)
            raise
        os.utime(entry / MANIFEST)  # least recently used goes first
        setupspare.make(entry, self._spare_lock(key), paths)  # for the next hit
        return Restored(
            key=key,
            paths=tuple(paths),
            size=int(manifest["size"]),
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    # --- store ---------------------------------------------------------------------------------

    async def store(
        self, key: str, worktree: Path, paths: Iterable[str], *, info: Mapping[str, Any]
    ) -> Entry | None:
        """Make the key's entry of ``paths`` (relative to ``worktree``); None when there is
        nothing to keep or it would not fit. The caller holds the key."""
        paths = sorted(p for p in set(paths) if setupfiles.safe(p))
        if not paths:
            return None
        private.make_dir(self.root)
        for stale in self.root.glob(f"{_BUILD}{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a build that crashed
        build = self.root / f"{_BUILD}{key}-{secrets.token_hex(4)}"
        private.make_dir(build / FILES)
        try:
            await _copy(worktree, paths, build / FILES)
            scanned = await asyncio.to_thread(setupfiles.scan, build / FILES, str(worktree))
            manifest = {
                **info,
                "key": key,
                "paths": paths,
                "created": time.time(),
                "build_path": str(worktree),
                **scanned,
            }
            data = json.dumps(manifest, indent=1).encode()
            fd = os.open(build / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, private.FILE_MODE)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            size = _footprint(build, scanned["disk"])
            if self.max_bytes and size + self._overhead() > self.max_bytes:
                log.warning("setup cache: entry %s (%d bytes) exceeds the limit", key, size)
                shutil.rmtree(build, ignore_errors=True)
                return None
            target = self.root / key
            if target.exists():  # cannot be usable: the key is held and it had no manifest
                shutil.rmtree(target)
            os.rename(build, target)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        self.evict(keep=key)  # first: room for the spare too
        setupspare.make(target, self._spare_lock(key), paths)  # for the first hit
        return self._entry(target, in_use=True)

    # --- listing, clearing, eviction -----------------------------------------------------------

    def _entry(self, path: Path, *, in_use: bool | None = None) -> Entry | None:
        manifest = _read_manifest(path)
        if manifest is None:
            return None
        if in_use is None:
            fd = self._try_lock(path.name)
            in_use = fd is None
            if fd is not None:
                os.close(fd)
        files_size = int(manifest.get("size", 0))
        try:
            size = _footprint(path, int(manifest.get("disk", files_size)))
            used = (path / MANIFEST).stat().st_mtime
        except FileNotFoundError:  # removed meanwhile
            return None
        return Entry(
            key=path.name,
            path=path,
            size=size,
            files_size=files_size,
            created=float(manifest.get("created", 0)),
            used=used,
            paths=tuple(manifest.get("paths", ())),
            repo=str(manifest.get("repo", "")),
            commands=tuple(manifest.get("commands", ())),
            in_use=in_use,
        )

    def entries(self) -> list[Entry]:
        """Every usable entry, most recently used first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            if _KEY.match(path.name) and (entry := self._entry(path)) is not None:
                found.append(entry)
        return sorted(found, key=lambda e: e.used, reverse=True)

    def _overhead(self) -> int:
        """The disk use of the cache's own directories (its root, its locks)."""
        return sum(setupfiles.blocks(d) for d in (self.root, self.root / "locks") if d.is_dir())

    def _drop(self, key: str) -> bool:
        """Remove the entry unless it is in use; whether it was removed."""
        fd = self._try_lock(key)
        if fd is None:
            return False
        try:
            target = self.root / key
            trash = self.root / f"{_TRASH}{key}-{secrets.token_hex(4)}"
            try:
                os.rename(target, trash)  # gone at once for every reader
            except FileNotFoundError:
                return False
            shutil.rmtree(trash, ignore_errors=True)
            for stale in self.root.glob(f"{_BUILD}{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def clear(self, key: str | None = None) -> tuple[list[str], list[str]]:
        """Remove one entry (``CacheEntryNotFound`` when there is none) or all of them; the
        keys removed and the keys left because they are in use."""
        if key is not None:
            if not _KEY.match(key) or _read_manifest(self.root / key) is None:
                raise CacheEntryNotFound(f"no setup cache entry {key}")
            keys = [key]
        else:
            keys = [e.key for e in self.entries()]
        removed: list[str] = []
        busy: list[str] = []
        for k in keys:
            (removed if self._drop(k) else busy).append(k)
        return sorted(removed), sorted(busy)

    def evict(self, *, keep: str | None = None) -> list[str]:
        """Remove the least recently used entries until they all fit in ``max_bytes``; never
        one in use (nor ``keep``)."""
        if not self.max_bytes:
            return []
        entries = sorted(self.entries(), key=lambda e: e.used)
        total = sum(e.size for e in entries) + self._overhead()
        removed = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.key == keep or entry.in_use or not self._drop(entry.key):
                continue
            total -= entry.size
            removed.append(entry.key)
        return removed


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("paths"), list) else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


async def _copy(source: Path, paths: Sequence[str], target: Path) -> None:
    """``cp -a --reflink=auto --parents`` of ``paths`` (relative to ``source``) into ``target``:
    a copy, never a hardlink."""
    process = await asyncio.create_subprocess_exec(
        "cp", "-a", "--reflink=auto", "--parents", "-t", str(target), "--", *paths,
        cwd=source,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    if process.returncode != 0:
        message = err.decode(errors="replace").strip()[-500:]
        raise WorkspaceError(f"cannot copy the setup's files: {message}")


def _footprint(entry: Path, disk: int) -> int:
    """What the entry takes on disk: its directory and manifest, its files (``disk``: their
    blocks, ``setupfiles.scan``'s) and as much again for its spare (where spares are made)."""
    spare = disk if setupspare.available() else 0
    return setupfiles.blocks(entry) + setupfiles.blocks(entry / MANIFEST) + disk + spare
