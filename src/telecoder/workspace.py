"""Git: one bare mirror per repository, one worktree per session, commit and push.

The user's checkout is only ever read (``remote get-url``, a lock-free ``status``). Work happens in
a mirror under ``$TELECODER_HOME/mirrors`` — fetched at every attempt, remote branches kept under
``refs/remotes/origin/*`` so a fetch never disturbs a session's branch — and a ``git worktree`` on
branch ``telecoder/<id>``. Commits are made on the host with hooks disabled (the agent may have
written one) and with a fixed date, so an attempt that redoes a crashed one's work makes the very
same commit; the push is skipped when the remote already has it, and otherwise fenced with
``--force-with-lease`` on what the remote had.

Its parts: ``gitcmd`` (running git safely on the host), ``worktree`` (``RepoSource``,
``Worktree``), ``mirrors`` (the bare mirror: fetch, base, its own files), ``snapshots`` (what a
commit would hold), ``sandboxgit`` (the agent's own git dir); ``Workspace`` composes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from telecoder import private, sandboxgit, snapshots, warmpool
from telecoder.domain import DiffStats
from telecoder.errors import (
    BaseRefNotFound,
    NotAGitRepo,
    PushRejected,
    RepoNotFound,
    WorkspaceError,
)
from telecoder.gitcmd import (
    ISOLATED,
    LOCKED,
    SAFE,
    SHA,
    STALE_PUSH_LOCK_SECONDS,
    git_check,
    git_environ,
    git_out,
    git_status,
    is_url,
    scrub,
    tail,
    unreadable,
)
from telecoder.mirrors import (
    MirrorLocks,
    admin_dir,
    drop_half_made_worktrees,
    fetch,
    fetch_once,
    owns,
    resolve_base,
    restore_git_dir,
)
from telecoder.warmpool import WorktreePool
from telecoder.worktree import RepoSource, Worktree, restore_dot_git

log = logging.getLogger(__name__)

__all__ = ["RepoSource", "Workspace", "Worktree", "is_url", "scrub"]


class Workspace:
    def __init__(
        self,
        *,
        mirrors: Path,
        worktrees: Path,
        author_name: str = "TeleCoder",
        author_email: str = "telecoder@localhost",
        pool_size: int = 4,
    ) -> None:
        self.mirrors = mirrors
        self.worktrees = worktrees
        self.author_name = author_name
        self.author_email = author_email
        self.locks = MirrorLocks()
        # Worktrees kept ready per mirror: finished ones, and ones made in the background.
        self.pool = WorktreePool(worktrees, pool_size, self.locks)

    # --- the repository ----------------------------------------------------------------------

    async def resolve(self, repo: str) -> RepoSource:
        """Check ``repo`` (a path or a URL) and find its remote; never writes to a checkout."""
        if not repo.strip():
            raise RepoNotFound("no repository given")
        if is_url(repo):
            if repo.startswith("file://"):
                path = Path(urlsplit(repo).path)
                if not path.exists():
                    raise RepoNotFound(f"repository {repo} does not exist")
            return RepoSource(spec=repo, remote_url=repo)
        path = Path(repo).expanduser().resolve()
        if not path.exists():
            raise RepoNotFound(f"repository {repo} does not exist")
        if not path.is_dir():
            raise NotAGitRepo(f"{repo} is not a git repository (not a directory)")
        # One git for both questions (a fan-out asks it of every repository): in a bare
        # repository --show-toplevel fails after printing "true".
        # The remote is asked for at the same time (git finds it from any directory inside).
        (code, out, _), (url_code, url, _) = await asyncio.gather(
            git_check(path, "rev-parse", "--is-bare-repository", "--show-toplevel"),
            git_check(path, "remote", "get-url", "origin"),
        )
        bare, _, top_line = out.strip().partition("\n")
        if bare == "true":
            return RepoSource(spec=str(path), remote_url=str(path))
        if bare != "false":
            raise NotAGitRepo(f"{repo} is not a git repository")
        if code != 0 or not top_line.strip():  # in a .git directory: as git says
            top_line = await git_out(path, "rev-parse", "--show-toplevel")
        top = Path(top_line.strip())
        if url_code != 0 or not url.strip():
            # No remote: the checkout is its own remote; branches are pushed into it.
            return RepoSource(spec=str(top), remote_url=str(top), checkout=top)
        url = url.strip()
        if not is_url(url) and not Path(url).is_absolute():
            url = str((top / url).resolve())
        return RepoSource(spec=str(top), remote_url=url, checkout=top)

    async def dirty(self, source: RepoSource) -> bool:
        """Whether the user's checkout has uncommitted changes (read without taking locks)."""
        if source.checkout is None:
            return False
        code, out, err = await git_check(
            source.checkout, *SAFE, "--no-optional-locks", "status", "--porcelain"
        )
        if code != 0:
            raise WorkspaceError(f"git status failed: {scrub(tail(err))}")
        return bool(out.strip())

    async def unpushed(self, source: RepoSource) -> int:
        """How many commits of the user's checkout (its HEAD) no branch of ``origin`` has."""
        if source.checkout is None or source.remote_url == str(source.checkout):
            return 0
        code, out, _ = await git_check(
            source.checkout,
            *SAFE,
            "--no-optional-locks",
            "rev-list",
            "--count",
            "HEAD",
            "--not",
            "--remotes=origin",
        )
        count = out.strip()
        return int(count) if code == 0 and count.isdigit() else 0

    async def check_base(
        self, source: RepoSource, base: str | None, env: Mapping[str, str] | None = None
    ) -> None:
        """Check that the remote can be read and has ``base`` as a branch or tag.

        A commit sha cannot be checked without fetching; it is checked when the worktree is made.
        """
        code, out, err = await git_check(
            None,
            "ls-remote",
            "--",
            source.remote_url,
            "HEAD",
            "refs/heads/*",
            "refs/tags/*",
            env=env,
        )
        if code != 0:
            raise RepoNotFound(unreadable(source.remote_url, err))
        refs = {line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line}
        if base is None:
            # The task starts from the remote's default branch: a HEAD that points to no branch
            # (a bare repository made with another default name) would fail once it runs.
            heads = sorted(r[len("refs/heads/") :] for r in refs if r.startswith("refs/heads/"))
            if heads and "HEAD" not in refs:
                raise BaseRefNotFound(
                    f"{scrub(source.remote_url)} has no default branch (its HEAD points to no "
                    f"branch): name one with --base (branches: {', '.join(heads[:10])})"
                )
            return
        if SHA.match(base):
            return
        wanted = {f"refs/heads/{base}", f"refs/tags/{base}", base}
        if not refs & wanted:
            raise BaseRefNotFound(f"base ref {base!r} does not exist in {scrub(source.remote_url)}")

    # --- mirror and worktree -----------------------------------------------------------------

    def mirror_path(self, remote_url: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", remote_url.rstrip("/").rsplit("/", 1)[-1])
        name = name.removesuffix(".git") or "repo"
        digest = hashlib.sha256(remote_url.encode()).hexdigest()[:12]
        return self.mirrors / f"{name}-{digest}.git"

    async def prepare(
        self,
        name: str,
        source: RepoSource,
        *,
        branch: str,
        base: str | None,
        env: Mapping[str, str] | None = None,
    ) -> Worktree:
        """Fetch the mirror and make a fresh worktree ``name`` on ``branch`` from ``base``.

        Each attempt names its own worktree: an agent orphaned by a crashed worker can only
        write into the old one, which is discarded here along with anything else on ``branch``.
        """
        with self.pool.preparing():
            return await self._prepare(name, source, branch=branch, base=base, env=env)

    async def _prepare(
        self,
        name: str,
        source: RepoSource,
        *,
        branch: str,
        base: str | None,
        env: Mapping[str, str] | None,
    ) -> Worktree:
        mirror = self.mirror_path(source.remote_url)
        path = self.worktrees / name
        arrived = time.time_ns()
        async with self.locks.hold(mirror):
            drop_half_made_worktrees(mirror)
            fetched = await fetch_once(mirror, source.remote_url, env, arrived)
            try:
                base_name, base_sha = await resolve_base(mirror, base)
            except BaseRefNotFound:
                if fetched:
                    raise
                # The fetch shared began before this caller came: its base may be newer.
                await fetch(mirror, source.remote_url, env)
                base_name, base_sha = await resolve_base(mirror, base)
            for stale in await self._worktrees_on(mirror, branch):
                await self._discard(mirror, stale)
            await self._discard(mirror, path)
            private.make_dir(path.parent)
            taken = await self.pool.take(mirror, path, branch, base_sha)
            admin, pristine = taken if taken is not None else (None, False)
            fresh = admin is None
            if admin is None:
                # Only the worktree's records under the lock: its files are written after.
                await git_out(
                    mirror, *SAFE, "worktree", "add", "-q", "--no-checkout", "-B", branch,
                    str(path), base_sha, unlock=mirror,
                )  # fmt: skip
                admin = admin_dir(mirror, path)
            path.chmod(0o700)  # the mirror's sharedRepository opens the directory it makes
        # A worktree on the session's branch: if this is cut short, the next attempt discards it.
        if fresh:  # an empty directory: its checkout, nothing to clean
            await warmpool.checkout(path, admin)
        elif not pristine:  # a finished session's files: back to the base's
            await warmpool.reset(path, admin)
        self.pool.want(mirror)
        return Worktree(
            path=path,
            branch=branch,
            base=base_name,
            base_sha=base_sha,
            remote_url=source.remote_url,
            mirror=mirror,
            git_dir=admin,
        )

    async def reopen(
        self, path: Path, source: RepoSource, *, branch: str, base: str | None, base_sha: str
    ) -> Worktree | None:
        """The worktree a chat's earlier turn left at ``path``, still on ``branch``; None when it
        is gone (removed, or made on another host)."""
        mirror = self.mirror_path(source.remote_url)
        if not path.is_dir() or not (mirror / "HEAD").exists():
            return None
        try:
            git_dir = admin_dir(mirror, path)
        except WorkspaceError:
            return None
        code, out, _ = await git_status(
            None, "--git-dir", str(git_dir), "symbolic-ref", "-q", "HEAD"
        )
        if code != 0 or out.strip() != f"refs/heads/{branch}":
            return None
        async with self.locks.hold(mirror):
            base_name, _ = await resolve_base(mirror, base)
        wt = Worktree(
            path=path,
            branch=branch,
            base=base_name,
            base_sha=base_sha,
            remote_url=source.remote_url,
            mirror=mirror,
            git_dir=git_dir,
        )
        restore_dot_git(wt)
        return wt

    async def _worktrees_on(self, mirror: Path, branch: str) -> list[Path]:
        if not (mirror / "HEAD").exists():
            return []
        out = await git_out(mirror, "worktree", "list", "--porcelain")
        found: list[Path] = []
        path: Path | None = None
        for line in out.splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line == f"branch refs/heads/{branch}" and path is not None:
                found.append(path)
        return found

    async def _discard(self, mirror: Path, path: Path) -> None:
        await warmpool.discard(mirror, path)

    async def sandbox_git_dir(self, wt: Worktree, target: Path) -> Path:
        """A git dir of the agent's own for ``wt``, made at ``target`` (``sandboxgit``)."""
        return await sandboxgit.sandbox_git_dir(
            wt, target, author_name=self.author_name, author_email=self.author_email
        )

    def view(self, path: Path) -> tuple[tuple[str, ...], dict[str, str]] | None:
        """How to run a read-only git command (diff, cat-file) on ``path`` — a session's
        worktree, a mirror, a bare remote or a user's checkout — without running anything an
        agent wrote: the git options and environment; None when ``path`` is a worktree whose
        git dir TeleCoder cannot vouch for (its ``.git`` file is the agent's to rewrite)."""
        env = dict(ISOLATED)
        dot_git = path / ".git"
        if dot_git.is_file() or dot_git.is_symlink():  # a worktree: its admin dir, or nothing
            for mirror in sorted(self.mirrors.glob("*.git")) if self.mirrors.is_dir() else []:
                if owns(mirror, path):
                    admin = admin_dir(mirror, path)
                    return ("--git-dir", str(admin), "--work-tree", str(path), *SAFE), env
            return None
        if not dot_git.exists() and (path / "HEAD").is_file():
            return ("--git-dir", str(path), *SAFE), env  # a bare repository
        return (*SAFE,), env

    async def read_base(self, wt: Worktree, name: str, limit: int) -> bytes | None:
        """The file ``name`` as the base commit has it (not as the agent left it); None when
        there is none; at most ``limit`` + 1 bytes."""
        code, out, _ = await git_status(
            None, "--git-dir", str(wt.mirror), "cat-file", "-s", f"{wt.base_sha}:{name}"
        )
        if code != 0:
            return None
        if int(out.strip() or 0) > limit:
            return b"\0" * (limit + 1)
        proc = await asyncio.create_subprocess_exec(
            "git", "--git-dir", str(wt.mirror), "cat-file", "blob", f"{wt.base_sha}:{name}",
            env=git_environ(ISOLATED), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        data, _ = await proc.communicate()
        return data if proc.returncode == 0 else None

    # --- results -----------------------------------------------------------------------------

    async def sanitize(self, wt: Worktree) -> None:
        """Undo what an agent may have done to git's own files before git runs on the host.

        The agent can reach the mirror through its worktree: a hook, a ``core.fsmonitor`` or
        ``filter.*`` command, a ``url.*.insteadOf`` or credential helper in its config would
        run (or leak credentials) in TeleCoder's commit and push. The mirror's config is
        TeleCoder's alone and is rewritten; hooks, attributes and worktree configs are removed.
        This guards the host's git commands; confining the agent itself is the runtime's job.
        """
        async with self.locks.hold(wt.mirror):
            restore_git_dir(wt.mirror, wt.remote_url)
            wt.git_dir.joinpath("config.worktree").unlink(missing_ok=True)
            restore_dot_git(wt)

    async def commit(self, wt: Worktree, message: str, *, date: float) -> str | None:
        """Commit everything the agent changed; None when nothing changed at all."""
        await git_out(wt.path, *wt.git(), "add", "-A", env=ISOLATED)
        staged = (
            await git_status(wt.path, *wt.git(), "diff", "--cached", "--quiet", env=ISOLATED)
        )[0] != 0
        head = (await git_out(wt.path, *wt.git(), "rev-parse", "HEAD")).strip()
        if not staged:
            return head if head != wt.base_sha else None
        stamp = f"@{int(date)} +0000"
        env = {
            **ISOLATED,
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
        }
        await git_out(
            wt.path, *wt.git(), "commit", "-q", "--no-verify", "--allow-empty-message", "-F", "-",
            env=env, stdin=message.encode(),
        )  # fmt: skip
        return (await git_out(wt.path, *wt.git(), "rev-parse", "HEAD")).strip()

    # --- snapshots: what a commit would hold, without touching the worktree's index ------------

    async def snapshot(self, wt: Worktree) -> str:
        """The tree ``git add -A`` would commit now (``snapshots``)."""
        return await snapshots.snapshot(wt)

    async def changed_since(self, wt: Worktree, tree: str) -> list[str]:
        """Paths whose committed content would differ from ``tree``."""
        return await snapshots.changed_since(wt, tree)

    async def restore(self, wt: Worktree, tree: str) -> list[str]:
        """Put every path that differs from ``tree`` back as it was; returns those paths."""
        return await snapshots.restore(wt, tree)

    async def diff_stats(self, wt: Worktree) -> DiffStats:
        out = await git_out(
            wt.path, *wt.git(), "diff", "--numstat", "--no-ext-diff", "--no-textconv",
            wt.base_sha, "HEAD", env=ISOLATED,
        )  # fmt: skip
        files = insertions = deletions = 0
        for line in out.splitlines():
            added, removed, _ = line.split("\t", 2)
            files += 1
            insertions += int(added) if added.isdigit() else 0
            deletions += int(removed) if removed.isdigit() else 0
        return DiffStats(files_changed=files, insertions=insertions, deletions=deletions)

    async def changed_paths(self, wt: Worktree) -> list[str]:
        """The paths the worktree's commits change since the base (both sides of a rename)."""
        out = await git_out(
            wt.path, *wt.git(), "diff", "--name-status", "--no-renames", "-z",
            wt.base_sha, "HEAD", env=ISOLATED,
        )  # fmt: skip
        fields = out.split("\0")
        return [path for path in fields[1::2] if path]

    async def diff(self, wt: Worktree) -> str:
        return await git_out(
            wt.path, *wt.git(), "diff", "--no-ext-diff", "--no-textconv", wt.base_sha, "HEAD",
            env=ISOLATED,
        )  # fmt: skip

    async def uncommitted_diff(self, wt: Worktree) -> str:
        """The patch from the base to what a commit would hold now (untracked files included),
        without touching the worktree or its index."""
        tree = await self.snapshot(wt)
        return await git_out(
            wt.path, *wt.git(), "diff", "--no-ext-diff", "--no-textconv", "--binary",
            wt.base_sha, tree, env=ISOLATED,
        )  # fmt: skip

    async def push(self, wt: Worktree, sha: str, env: Mapping[str, str] | None = None) -> bool:
        """Make the remote's ``branch`` point at ``sha``; False when it already did."""
        ref = f"refs/heads/{wt.branch}"
        code, out, err = await git_status(None, "ls-remote", "--", wt.remote_url, ref, env=env)
        if code != 0:
            raise WorkspaceError(f"cannot read {scrub(wt.remote_url)}: {scrub(tail(err))}")
        current = out.split("\t", 1)[0].strip() if out.strip() else ""
        if current == sha:
            return False
        for _ in range(2):
            code, _, err = await git_status(
                wt.mirror, *SAFE, "push", "--quiet", "--no-verify",
                f"--force-with-lease={ref}:{current}", "--", wt.remote_url, f"{sha}:{ref}",
                env=env,
            )  # fmt: skip
            if code == 0:
                return True
            if (stale := _stale_branch_lock(wt, err)) is None:
                break
            log.warning("removing %s, left behind by a push that was killed", stale)
            stale.unlink(missing_ok=True)
        raise PushRejected(f"push to {scrub(wt.remote_url)} failed: {scrub(tail(err))}")

    async def remove(self, wt: Worktree) -> None:
        """Done with ``wt``: keep it in the pool for the next session, or delete it."""
        async with self.locks.hold(wt.mirror):
            if await self.pool.release(wt.mirror, wt.path):
                return
            trash = await warmpool.detach(wt.mirror, wt.path, self.worktrees)
        await warmpool.delete(trash)  # after the lock: prepares on the mirror go on

    async def remove_path(self, path: Path) -> None:
        """Delete the worktree at ``path`` (one a chat kept), wherever its mirror is."""
        for mirror in sorted(self.mirrors.glob("*.git")) if self.mirrors.is_dir() else []:
            if owns(mirror, path):
                async with self.locks.hold(mirror):
                    trash = await warmpool.detach(mirror, path, self.worktrees)
                await warmpool.delete(trash)
                break
        shutil.rmtree(path, ignore_errors=True)

    def mark_finished(self, wt: Worktree) -> None:
        """Note when a kept worktree's session ended, for ``prune``."""
        marker = wt.path.with_name(wt.path.name + ".done")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(time.time()))

    async def prune(self, older_than: float) -> list[str]:
        """Remove kept worktrees whose session ended more than ``older_than`` seconds ago."""
        removed: list[str] = []
        now = time.time()
        for marker in self.worktrees.glob("*.done"):
            try:
                ended = float(marker.read_text() or 0)
            except (OSError, ValueError):
                ended = 0.0
            if now - ended < older_than:
                continue
            path = marker.with_suffix("")
            await self.remove_path(path)
            marker.unlink(missing_ok=True)
            removed.append(path.name)
        return removed


def _stale_branch_lock(wt: Worktree, err: str) -> Path | None:
    """The lock on the session's own branch in a remote on this host, left by a push whose
    receiving git was killed along with the worker (a server's receive-pack outlives the
    client; a local one dies with it). The session's lease says nobody else pushes there."""
    if is_url(wt.remote_url) and not wt.remote_url.startswith("file://"):
        return None
    remote = Path(urlsplit(wt.remote_url).path if is_url(wt.remote_url) else wt.remote_url)
    expected = (remote / "refs" / "heads" / f"{wt.branch}.lock").resolve()
    match = LOCKED.search(err)
    if match is None or match["lock"] is None or Path(match["lock"]).resolve() != expected:
        return None
    try:
        age = time.time() - expected.stat().st_mtime
    except FileNotFoundError:
        return None
    return expected if age > STALE_PUSH_LOCK_SECONDS else None
