"""The bare mirror of a repository, one per remote under ``$TELECODER_HOME/mirrors``: fetched
at every attempt (remote branches under ``refs/remotes/origin/*``), its config always TeleCoder's
own, a base resolved to the branch a pull request targets and the commit to start from, and a
worktree's admin dir found from the mirror's records, never from the worktree's ``.git``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from telecoder.errors import BaseRefNotFound, RepoNotFound, WorkspaceError
from telecoder.gitcmd import SHA, git_out, git_status, host_lock, scrub, tail, unreadable

log = logging.getLogger(__name__)

# git's words for "this will not work however often you try".
_PERMANENT = re.compile(
    r"could not read Username|Authentication failed|Permission denied|"
    r"[Rr]epository not found|does not appear to be a git repository|HTTP 40[134]",
)


# When the mirror's last successful fetch ended (ns since the epoch): a caller that waited for
# the mirror's lock while someone else fetched uses that fetch instead of starting another.
FETCHED = "telecoder-fetched"


class MirrorLocks:
    """The lock of each mirror: an asyncio lock among this process's tasks (handed over at
    once, in arrival order), then the host lock shared with every other process."""

    def __init__(self) -> None:
        self._locks: dict[Path, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, mirror: Path) -> AsyncIterator[None]:
        lock = self._locks.setdefault(mirror, asyncio.Lock())
        async with lock, host_lock(mirror.with_suffix(".lock")):
            yield


def fetched_since(mirror: Path, since_ns: int) -> bool:
    """Whether a fetch of ``mirror`` ended successfully at ``since_ns`` or later (and not in
    the future: a clock set back makes a caller fetch rather than trust the record)."""
    try:
        ended = int((mirror / FETCHED).read_text().strip())
    except (OSError, ValueError):
        return False
    return since_ns <= ended <= time.time_ns()


async def fetch_once(
    mirror: Path, remote_url: str, env: Mapping[str, str] | None, arrived_ns: int
) -> bool:
    """Fetch ``mirror`` unless a fetch ended after ``arrived_ns`` (when its caller started to
    wait for the mirror's lock, which the caller now holds): a burst of sessions on one
    repository shares one fetch; one that comes after it fetches again. True if it fetched."""
    if (mirror / "HEAD").exists() and fetched_since(mirror, arrived_ns):
        restore_git_dir(mirror, remote_url)
        return False
    await fetch(mirror, remote_url, env)
    return True


async def fetch(mirror: Path, remote_url: str, env: Mapping[str, str] | None) -> None:
    if not (mirror / "HEAD").exists():
        tmp = mirror.with_name(mirror.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        await git_out(None, "init", "-q", "--bare", str(tmp))
        restore_git_dir(tmp, remote_url)
        tmp.rename(mirror)
    else:
        restore_git_dir(mirror, remote_url)
    code, _, err = await git_status(
        mirror, "fetch", "-q", "--prune", "--tags", "--force", "origin", env=env, unlock=mirror
    )
    if code != 0:
        if _PERMANENT.search(err):
            raise RepoNotFound(unreadable(remote_url, err))
        raise WorkspaceError(f"cannot fetch {scrub(remote_url)}: {scrub(tail(err))}")
    code, _, _ = await git_status(mirror, "symbolic-ref", "-q", "refs/remotes/origin/HEAD")
    if code != 0:
        await git_status(mirror, "remote", "set-head", "origin", "--auto", env=env, unlock=mirror)
    record = mirror / (FETCHED + ".tmp")
    record.write_text(str(time.time_ns()))
    record.replace(mirror / FETCHED)


async def resolve_base(mirror: Path, base: str | None) -> tuple[str, str]:
    """(the branch a PR targets, the commit to start from) for ``base``.

    No base: the remote's default branch. A branch: itself. A tag or a commit sha: that
    commit, and PRs target the default branch.
    """
    code, head, _ = await git_status(
        mirror, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"
    )
    default = head.strip().removeprefix("origin/") if code == 0 else None
    if base is None:
        if default is None:
            raise BaseRefNotFound("the remote has no default branch: pass --base")
        base = default
    if sha := await _sha(mirror, f"refs/remotes/origin/{base}"):
        return base, sha
    tag = f"refs/tags/{base.removeprefix('refs/tags/')}"
    for ref in (tag, base if SHA.match(base) else None):
        if ref and (sha := await _sha(mirror, ref)):
            return default or base, sha
    raise BaseRefNotFound(f"base ref {base!r} does not exist")


async def _sha(mirror: Path, ref: str) -> str | None:
    code, out, _ = await git_status(mirror, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    return out.strip() if code == 0 else None


def config_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def admin_dir(mirror: Path, worktree: Path) -> Path:
    """The worktree's own directory inside ``mirror``, found from the mirror's records (its
    ``gitdir`` files), never from the worktree's ``.git`` file, which the agent can rewrite."""
    wanted = worktree.absolute() / ".git"
    for gitdir in (mirror / "worktrees").glob("*/gitdir"):
        try:
            if Path(gitdir.read_text().strip()) == wanted:
                return gitdir.parent
        except (OSError, UnicodeDecodeError):
            continue
    raise WorkspaceError(f"{worktree} is not a worktree of {mirror.name}")


def owns(mirror: Path, worktree: Path) -> bool:
    try:
        admin_dir(mirror, worktree)
    except WorkspaceError:
        return False
    return True


def _share_objects(objects: Path) -> None:
    """Make objects written before ``sharedRepository`` (or under a tight umask) readable."""
    pack = objects / "pack"
    if not pack.is_dir() or pack.stat().st_mode & 0o005 == 0o005:
        return
    for root, dirs, files in os.walk(objects):
        for name in dirs:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o755)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444)
    os.chmod(objects, os.stat(objects).st_mode | 0o755)


def restore_git_dir(mirror: Path, remote_url: str) -> None:
    """Write the mirror's config as TeleCoder made it; drop hooks and attribute files."""
    config = (
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"
        # Objects readable by a sandbox's uid (it reads them through alternates), whatever
        # TeleCoder's umask; the mirror itself stays in TeleCoder's private home.
        "\tsharedRepository = 0644\n"
        '[remote "origin"]\n'
        f"\turl = {config_value(remote_url)}\n"
        "\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
        "[gc]\n\tauto = 0\n"
    )
    tmp = mirror / "config.telecoder-tmp"
    tmp.write_text(config)
    tmp.replace(mirror / "config")
    _share_objects(mirror / "objects")
    shutil.rmtree(mirror / "hooks", ignore_errors=True)
    (mirror / "info" / "attributes").unlink(missing_ok=True)


def drop_half_made_worktrees(mirror: Path) -> None:
    """Remove worktrees whose ``git worktree add`` was killed half-way (the caller holds the
    mirror's lock, so none is being made now). Such a worktree is still locked
    "initializing" and its HEAD is the null id, which breaks every later fetch."""
    for locked in (mirror / "worktrees").glob("*/locked"):
        try:
            if locked.read_text().strip() != "initializing":
                continue
        except (OSError, UnicodeDecodeError):
            continue
        try:
            gitdir = (locked.parent / "gitdir").read_text().strip()
        except (OSError, UnicodeDecodeError):
            gitdir = ""  # killed before it was written: there is no checkout yet
        log.warning("removing %s, left half-made by a git that was killed", locked.parent.name)
        if gitdir.endswith("/.git"):
            shutil.rmtree(Path(gitdir).parent, ignore_errors=True)
        shutil.rmtree(locked.parent, ignore_errors=True)
