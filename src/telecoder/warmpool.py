"""The warm pool: worktrees of a mirror kept ready under ``worktrees/pool/<mirror>/`` so that a
session's worktree is a rename — and a reset, which touches only the files that differ, when it
is a finished session's or not at the session's base — instead of a checkout of the whole
repository.

A pooled worktree is either a finished session's (``release``) or one made in the background at
the default branch's head (``refill``, run by the worker's side task ``run`` for the mirrors a
``prepare`` used). At most ``size`` per mirror (``TELECODER_WORKTREE_POOL``), those being made
included. One being made is named ``making-<pid>-<token>`` and is checked out outside the
mirror's lock (a session never waits for it); only when complete is it renamed ``warm-<token>``
and offered. The refill starts a checkout only while no session's prepare is under way, and
its git runs at the lowest CPU and I/O priority. One whose maker died (a crash, a stop) is
discarded; a git killed inside ``worktree add`` is ``mirrors.drop_half_made_worktrees``'s.
A worktree removed for good is moved aside under the mirror's lock and deleted after it
(``detach``, ``delete``).

Git runs here with the git dir found in the mirror's records and the options of ``gitcmd``,
never anything an agent wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from telecoder.errors import WorkspaceError
from telecoder.gitcmd import ISOLATED, LOW_PRIORITY, SAFE, git_out, git_status
from telecoder.mirrors import MirrorLocks, admin_dir, drop_half_made_worktrees, resolve_base

log = logging.getLogger(__name__)

MAKING = "making-"
WARM = "warm-"


class WorktreePool:
    def __init__(self, worktrees: Path, size: int, locks: MirrorLocks) -> None:
        self.worktrees = worktrees
        self.size = size  # pooled worktrees kept per mirror
        self.locks = locks
        self._wanted: dict[Path, None] = {}  # mirrors to refill, in the order asked
        self._wake = asyncio.Event()
        self._making: set[Path] = set()  # being made by this process now
        self._preparing = 0  # sessions' prepares under way: a refill waits for them
        self._idle = asyncio.Event()
        self._idle.set()
        self.made = 0  # worktrees this process made for the pool (benchmarks, tests)

    def dir(self, mirror: Path) -> Path:
        return self.worktrees / "pool" / mirror.name

    def count(self, mirror: Path) -> int:
        pool = self.dir(mirror)
        return len(list(pool.iterdir())) if pool.is_dir() else 0

    def ready(self, mirror: Path) -> list[Path]:
        """The pooled worktrees a session can take now."""
        pool = self.dir(mirror)
        if not pool.is_dir():
            return []
        return sorted(p for p in pool.iterdir() if not p.name.startswith(MAKING))

    # --- a session takes one; a finished one comes back ---------------------------------------

    async def take(
        self, mirror: Path, path: Path, branch: str, base_sha: str
    ) -> tuple[Path, bool] | None:
        """Move a pooled worktree to ``path`` and put it on ``branch`` at ``base_sha``: (its
        admin dir, whether its files are already exactly the base's), or None when there is
        none. The caller holds the mirror's lock. A finished session's files are still its
        own: ``reset`` makes them the base's, after the lock is let go. One the refill made at
        ``base_sha`` (a warm one, which no agent ever saw) is taken first and needs no reset:
        its files are the checkout's, untouched (a reset would only re-read all of them)."""
        await self.drop_abandoned(mirror)
        found = self.ready(mirror)
        found.sort(key=lambda p: (_head(mirror, p) != base_sha, not p.name.startswith(WARM)))
        for pooled in found:
            pristine = pooled.name.startswith(WARM) and _head(mirror, pooled) == base_sha
            if not (pooled / ".git").is_file():
                shutil.rmtree(pooled, ignore_errors=True)
                continue
            try:
                admin = admin_dir(mirror, pooled)
                admin.joinpath("config.worktree").unlink(missing_ok=True)
                (pooled / ".git").unlink(missing_ok=True)
                (pooled / ".git").write_text(f"gitdir: {admin}\n")
                await git_out(mirror, "worktree", "move", str(pooled), str(path), unlock=mirror)
                admin = admin_dir(mirror, path)
                # On the branch at once (cheap ref writes): a crash before the reset leaves a
                # worktree the next attempt finds on the branch and discards.
                await git_out(
                    mirror, "update-ref", f"refs/heads/{branch}", base_sha, unlock=mirror
                )  # fmt: skip
                await git_out(
                    None, "--git-dir", str(admin), "symbolic-ref", "HEAD", f"refs/heads/{branch}",
                    unlock=admin,
                )  # fmt: skip
            except WorkspaceError:
                await discard(mirror, path if path.exists() else pooled)
                continue
            return admin, pristine
        return None

    async def release(self, mirror: Path, path: Path) -> bool:
        """Put a finished worktree in the pool; False when the pool is full. The caller holds
        the mirror's lock."""
        pool = self.dir(mirror)
        if self.size < 1 or not (path / ".git").is_file():
            return False
        if self.count(mirror) >= self.size:
            return False
        pool.mkdir(parents=True, exist_ok=True)
        # The worktree keeps its branch checked out until reused: a retry that needs the
        # branch discards it (see Workspace.prepare).
        target = pool / path.name
        code, _, _ = await git_status(mirror, "worktree", "move", str(path), str(target))
        return code == 0

    # --- refilled in the background -----------------------------------------------------------

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """A session's worktree is being made: no refill starts a checkout meanwhile."""
        self._preparing += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._preparing -= 1
            if not self._preparing:
                self._idle.set()

    def want(self, mirror: Path) -> None:
        """Ask for ``mirror``'s pool to be refilled (by ``run``, when it runs)."""
        if self.size > 0:
            self._wanted[mirror] = None
            self._wake.set()

    async def run(self, halt: asyncio.Event) -> None:
        """Refill the pools asked for until ``halt`` is set; a refill under way is stopped then
        (its git killed, its half-made worktree removed). Never raises: a failed refill is
        logged and the next request tries again."""
        halted = asyncio.create_task(halt.wait())
        for left in sorted((self.worktrees / TRASH).glob("*")):  # moved aside before a crash
            await delete(left)
        try:
            while not halt.is_set():
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait({woken, halted}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                self._wake.clear()
                while self._wanted and not halt.is_set():
                    mirror = next(iter(self._wanted))
                    del self._wanted[mirror]
                    work = asyncio.create_task(self.refill(mirror))
                    await asyncio.wait({work, halted}, return_when=asyncio.FIRST_COMPLETED)
                    if not work.done():
                        work.cancel()
                    await _ended(work, mirror)
        finally:
            halted.cancel()

    async def refill(self, mirror: Path) -> int:
        """Make worktrees at the default branch's head until the pool of ``mirror`` holds
        ``size``; how many were made. The mirror's lock is held only to add and to rename each
        one, not while its files are written."""
        made = 0
        pool = self.dir(mirror)
        while True:
            await self._idle.wait()  # after the sessions' own checkouts, not beside them
            async with self.locks.hold(mirror):
                if not (mirror / "HEAD").exists() or self.count(mirror) >= self.size:
                    return made
                drop_half_made_worktrees(mirror)
                await self.drop_abandoned(mirror)
                _, sha = await resolve_base(mirror, None)
                token = secrets.token_hex(6)
                making = pool / f"{MAKING}{os.getpid()}-{token}"
                pool.mkdir(parents=True, exist_ok=True)
                self._making.add(making)
                try:
                    await git_out(
                        mirror, *SAFE, "worktree", "add", "-q", "--detach", "--no-checkout",
                        str(making), sha, unlock=mirror,
                    )  # fmt: skip
                    making.chmod(0o700)  # the mirror's sharedRepository opens what it makes
                except BaseException:
                    self._making.discard(making)
                    shutil.rmtree(making, ignore_errors=True)
                    raise
            try:
                await checkout(making, admin_dir(mirror, making), niced=True)
                async with self.locks.hold(mirror):
                    await git_out(
                        mirror, "worktree", "move", str(making), str(pool / f"{WARM}{token}"),
                        unlock=mirror,
                    )  # fmt: skip
            except BaseException:
                # Its admin entry goes with the next `worktree prune` (its directory is gone).
                shutil.rmtree(making, ignore_errors=True)
                raise
            finally:
                self._making.discard(making)
            made += 1
            self.made += 1

    async def drop_abandoned(self, mirror: Path) -> None:
        """Remove pooled worktrees whose maker is gone (a crashed or stopped process, or this
        one's stopped refill). The caller holds the mirror's lock."""
        pool = self.dir(mirror)
        for making in pool.glob(f"{MAKING}*") if pool.is_dir() else []:
            pid = making.name.removeprefix(MAKING).split("-", 1)[0]
            mine = pid == str(os.getpid())
            if (mine and making in self._making) or (not mine and _alive(pid)):
                continue
            log.warning("removing %s, left half-made by a refill that stopped", making.name)
            await discard(mirror, making)


async def _ended(work: asyncio.Task[int], mirror: Path) -> None:
    await asyncio.wait({work})
    if not work.cancelled() and (error := work.exception()) is not None:
        log.warning("refilling the pool of %s failed: %s", mirror.name, error)


async def reset(path: Path, admin: Path, *, niced: bool = False) -> None:
    """Make the worktree's files and index its HEAD's, and nothing else: tracked files changed
    or deleted are restored, untracked and ignored ones removed. Touches only what differs.
    ``niced``: for the pool, at the lowest CPU and I/O priority, out of the sessions' way."""
    await checkout(path, admin, niced=niced)
    git = ("--git-dir", str(admin), "--work-tree", str(path), *SAFE)
    await git_out(path, *git, "clean", "-q", "-ffdx", env=ISOLATED, niced=niced)


async def checkout(path: Path, admin: Path, *, niced: bool = False) -> None:
    """Write the files of a worktree just added with ``--no-checkout``: the ``reset --hard``
    that a plain ``git worktree add`` runs itself, and nothing more. Its directory was made
    empty by that add (a path discarded first), so nothing untracked can be there: a ``clean``
    would only walk the whole new tree again (100,000 files: ~0.15 s of CPU, ~0.6 s wall)."""
    git = ("--git-dir", str(admin), "--work-tree", str(path), *SAFE)
    await git_out(path, *git, "reset", "-q", "--hard", unlock=admin, env=ISOLATED, niced=niced)


TRASH = ".trash"


async def detach(mirror: Path, path: Path, worktrees: Path) -> Path | None:
    """Take the worktree at ``path`` out of ``mirror``'s records, its files moved aside to
    ``worktrees/.trash`` (one rename) for ``delete`` to remove once the caller has let the
    mirror's lock go: deleting a big checkout takes as long as making one, and every prepare
    on the mirror would wait for it. None when there is nothing left to delete (no files, or
    they could not be moved and were removed here). The caller holds the mirror's lock."""
    if not path.exists():
        await git_status(mirror, "worktree", "prune")
        return None
    trash = worktrees / TRASH / f"{path.name}-{secrets.token_hex(4)}"
    try:
        admin: Path | None = admin_dir(mirror, path)
    except WorkspaceError:
        admin = None
    try:
        trash.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.rename(path, trash)
    except OSError:  # another filesystem: removed in place
        await discard(mirror, path)
        return None
    if admin is not None:
        (admin / "locked").unlink(missing_ok=True)  # a killed `worktree add`'s
    await git_status(mirror, "worktree", "prune")  # its files are gone: so are its records
    return trash


async def delete(trash: Path | None) -> None:
    """Delete what ``detach`` moved aside, at the lowest CPU and I/O priority."""
    if trash is None:
        return
    proc = await asyncio.create_subprocess_exec(
        *LOW_PRIORITY, "rm", "-rf", "--", str(trash),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await proc.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    shutil.rmtree(trash, ignore_errors=True)  # whatever rm could not


async def discard(mirror: Path, path: Path) -> None:
    """Remove a worktree an earlier attempt left behind."""
    if path.exists():
        # Twice forced: also a worktree a killed `worktree add` left locked ("initializing").
        await git_status(mirror, "worktree", "remove", "-f", "-f", str(path))
        shutil.rmtree(path, ignore_errors=True)
    await git_status(mirror, "worktree", "prune")


def _head(mirror: Path, path: Path) -> str | None:
    """The commit a pooled worktree's files are at: its detached HEAD (a refilled one)."""
    try:
        return (admin_dir(mirror, path) / "HEAD").read_text().strip()
    except (OSError, WorkspaceError):
        return None


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
