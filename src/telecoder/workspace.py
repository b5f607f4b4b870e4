"""Git: one bare mirror per repository, one worktree per session, commit and push.

The user's checkout is only ever read (``remote get-url``, a lock-free ``status``). Work happens in
a mirror under ``$TELECODER_HOME/mirrors`` — fetched at every attempt, remote branches kept under
``refs/remotes/origin/*`` so a fetch never disturbs a session's branch — and a ``git worktree`` on
branch ``telecoder/<id>``. Commits are made on the host with hooks disabled (the agent may have
written one) and with a fixed date, so an attempt that redoes a crashed one's work makes the very
same commit; the push is skipped when the remote already has it, and otherwise fenced with
``--force-with-lease`` on what the remote had.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from telecoder import private
from telecoder.domain import DiffStats
from telecoder.errors import (
    BaseRefNotFound,
    NotAGitRepo,
    PushRejected,
    RepoNotFound,
    WorkspaceError,
)

# Options on every git command in a worktree: never run a hook, an fsmonitor, an external diff
# or a textconv (the agent may have written any of them), never sign, never prompt; the
# worktree's files belong to the sandbox's uid, which git must not take as a reason to stop.
_SAFE = (
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
    "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false", "-c", "diff.external=",
    "-c", "safe.directory=*", "-c", "core.untrackedCache=false",
)  # fmt: skip
# What git reads besides the repository's own config when it works on a worktree on the host:
# nothing (no global or system config, whose filters and drivers a .gitattributes could name).
_ISOLATED = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RepoSource:
    """Where a session's code comes from and where its branch goes."""

    spec: str  # as recorded on the session: an absolute path or a URL
    remote_url: str  # fetched from and pushed to
    checkout: Path | None = None  # the user's own checkout, when the repo was given as a path


@dataclass(frozen=True, slots=True)
class Worktree:
    path: Path
    branch: str
    base: str  # the branch a pull request targets
    base_sha: str
    remote_url: str
    mirror: Path
    git_dir: Path  # its admin dir in the mirror, found there, never from the worktree's .git

    def git(self) -> tuple[str, ...]:
        """Options that make git work on this worktree with the git dir TeleCoder decided,
        whatever its ``.git`` file now says, and with nothing of the agent's making run."""
        return ("--git-dir", str(self.git_dir), "--work-tree", str(self.path), *_SAFE)


def is_url(repo: str) -> bool:
    return bool(_URL.match(repo))


def scrub(text: str) -> str:
    """Remove credentials embedded in URLs from git's messages."""
    return _CREDENTIALS.sub(r"\1***@", text)


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
        self.pool_size = pool_size  # finished worktrees kept per mirror for reuse

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
        code, out, _ = await _git_status(path, "rev-parse", "--is-bare-repository")
        if code != 0:
            raise NotAGitRepo(f"{repo} is not a git repository")
        if out.strip() == "true":
            return RepoSource(spec=str(path), remote_url=str(path))
        top = Path((await _git(path, "rev-parse", "--show-toplevel")).strip())
        code, url, _ = await _git_status(top, "remote", "get-url", "origin")
        if code != 0 or not url.strip():
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
        out = await _git(source.checkout, *_SAFE, "--no-optional-locks", "status", "--porcelain")
        return bool(out.strip())

    async def check_base(
        self, source: RepoSource, base: str | None, env: Mapping[str, str] | None = None
    ) -> None:
        """Check that the remote can be read and has ``base`` as a branch or tag.

        A commit sha cannot be checked without fetching; it is checked when the worktree is made.
        """
        code, out, err = await _git_status(
            None, "ls-remote", "--heads", "--tags", "--", source.remote_url, env=env
        )
        if code != 0:
            raise RepoNotFound(_unreadable(source.remote_url, err))
        if base is None or _SHA.match(base):
            return
        refs = {line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line}
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
        mirror = self.mirror_path(source.remote_url)
        path = self.worktrees / name
        async with _locked(mirror.with_suffix(".lock")):
            _drop_half_made_worktrees(mirror)
            await self._fetch(mirror, source.remote_url, env)
            base_name, base_sha = await self._resolve_base(mirror, base)
            for stale in await self._worktrees_on(mirror, branch):
                await self._discard(mirror, stale)
            await self._discard(mirror, path)
            private.make_dir(path.parent)
            if not await self._reuse(mirror, path, branch, base_sha):
                await _git(
                    mirror, *_SAFE, "worktree", "add", "-q", "-B", branch, str(path), base_sha,
                    unlock=mirror,
                )  # fmt: skip
            path.chmod(0o700)  # the mirror's sharedRepository opens the directory it makes
        return Worktree(
            path=path,
            branch=branch,
            base=base_name,
            base_sha=base_sha,
            remote_url=source.remote_url,
            mirror=mirror,
            git_dir=_admin_dir(mirror, path),
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
            git_dir = _admin_dir(mirror, path)
        except WorkspaceError:
            return None
        code, out, _ = await _git_status(
            None, "--git-dir", str(git_dir), "symbolic-ref", "-q", "HEAD"
        )
        if code != 0 or out.strip() != f"refs/heads/{branch}":
            return None
        async with _locked(mirror.with_suffix(".lock")):
            base_name, _ = await self._resolve_base(mirror, base)
        wt = Worktree(
            path=path,
            branch=branch,
            base=base_name,
            base_sha=base_sha,
            remote_url=source.remote_url,
            mirror=mirror,
            git_dir=git_dir,
        )
        _restore_dot_git(wt)
        return wt

    async def _fetch(self, mirror: Path, remote_url: str, env: Mapping[str, str] | None) -> None:
        if not (mirror / "HEAD").exists():
            tmp = mirror.with_name(mirror.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            await _git(None, "init", "-q", "--bare", str(tmp))
            _restore_git_dir(tmp, remote_url)
            tmp.rename(mirror)
        else:
            _restore_git_dir(mirror, remote_url)
        code, _, err = await _git_status(
            mirror, "fetch", "-q", "--prune", "--tags", "--force", "origin", env=env, unlock=mirror
        )
        if code != 0:
            if _PERMANENT.search(err):
                raise RepoNotFound(_unreadable(remote_url, err))
            raise WorkspaceError(f"cannot fetch {scrub(remote_url)}: {scrub(_tail(err))}")
        code, _, _ = await _git_status(mirror, "symbolic-ref", "-q", "refs/remotes/origin/HEAD")
        if code != 0:
            await _git_status(
                mirror, "remote", "set-head", "origin", "--auto", env=env, unlock=mirror
            )

    async def _resolve_base(self, mirror: Path, base: str | None) -> tuple[str, str]:
        """(the branch a PR targets, the commit to start from) for ``base``.

        No base: the remote's default branch. A branch: itself. A tag or a commit sha: that
        commit, and PRs target the default branch.
        """
        code, head, _ = await _git_status(
            mirror, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"
        )
        default = head.strip().removeprefix("origin/") if code == 0 else None
        if base is None:
            if default is None:
                raise BaseRefNotFound("the remote has no default branch: pass --base")
            base = default
        if sha := await self._sha(mirror, f"refs/remotes/origin/{base}"):
            return base, sha
        tag = f"refs/tags/{base.removeprefix('refs/tags/')}"
        for ref in (tag, base if _SHA.match(base) else None):
            if ref and (sha := await self._sha(mirror, ref)):
                return default or base, sha
        raise BaseRefNotFound(f"base ref {base!r} does not exist")

    async def _sha(self, mirror: Path, ref: str) -> str | None:
        code, out, _ = await _git_status(mirror, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        return out.strip() if code == 0 else None

    # --- the pool: a finished worktree, reset, is much cheaper than a new checkout -----------

    def _pool(self, mirror: Path) -> Path:
        return self.worktrees / "pool" / mirror.name

    async def _reuse(self, mirror: Path, path: Path, branch: str, base_sha: str) -> bool:
        """Turn a pooled worktree into ``path`` on ``branch`` at ``base_sha``; False if none."""
        pool = self._pool(mirror)
        for pooled in sorted(pool.glob("*")) if pool.is_dir() else []:
            if not (pooled / ".git").is_file():
                shutil.rmtree(pooled, ignore_errors=True)
                continue
            try:
                admin = _admin_dir(mirror, pooled)
                admin.joinpath("config.worktree").unlink(missing_ok=True)
                (pooled / ".git").unlink(missing_ok=True)
                (pooled / ".git").write_text(f"gitdir: {admin}\n")
                await _git(mirror, "worktree", "move", str(pooled), str(path), unlock=mirror)
                git = ("--git-dir", str(admin), "--work-tree", str(path), *_SAFE)
                # -f drops what the last agent changed in tracked files; clean the rest.
                await _git(
                    path, *git, "checkout", "-q", "-f", "-B", branch, base_sha,
                    unlock=mirror, env=_ISOLATED,
                )  # fmt: skip
                await _git(path, *git, "clean", "-q", "-ffdx", env=_ISOLATED)
            except WorkspaceError:
                await self._discard(mirror, path if path.exists() else pooled)
                continue
            return True
        return False

    async def _release(self, wt: Worktree) -> bool:
        """Put a finished worktree in the pool; False when the pool is full."""
        pool = self._pool(wt.mirror)
        if self.pool_size < 1 or not (wt.path / ".git").is_file():
            return False
        if pool.is_dir() and len(list(pool.iterdir())) >= self.pool_size:
            return False
        pool.mkdir(parents=True, exist_ok=True)
        # The worktree keeps its branch checked out until reused: a retry that needs the
        # branch discards it (see prepare).
        target = pool / wt.path.name
        code, _, _ = await _git_status(wt.mirror, "worktree", "move", str(wt.path), str(target))
        return code == 0

    async def _worktrees_on(self, mirror: Path, branch: str) -> list[Path]:
        if not (mirror / "HEAD").exists():
            return []
        out = await _git(mirror, "worktree", "list", "--porcelain")
        found: list[Path] = []
        path: Path | None = None
        for line in out.splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line == f"branch refs/heads/{branch}" and path is not None:
                found.append(path)
        return found

    async def _discard(self, mirror: Path, path: Path) -> None:
        """Remove a worktree an earlier attempt left behind."""
        if path.exists():
            # Twice forced: also a worktree a killed `worktree add` left locked ("initializing").
            await _git_status(mirror, "worktree", "remove", "-f", "-f", str(path))
            shutil.rmtree(path, ignore_errors=True)
        await _git_status(mirror, "worktree", "prune")

    async def sandbox_git_dir(self, wt: Worktree, target: Path) -> Path:
        """A git dir of the agent's own for ``wt``, made at ``target``, to be mounted over the
        worktree's admin dir inside the sandbox.

        It holds the branch at the worktree's HEAD, ``origin/<base>``, a copy of the index and a
        plain config; the mirror's objects are read through ``alternates`` (mounted read-only),
        new objects are written here. So the agent's git works (status, diff, add, commit)
        while nothing it does reaches the mirror's config, hooks, refs or objects, another
        session, or TeleCoder's own git on the host, which commits the work tree itself.
        """
        head = (
            _head_of(wt)
            or (await _git(wt.path, *wt.git(), "rev-parse", "HEAD", env=_ISOLATED)).strip()
        )
        if target.exists():
            await asyncio.to_thread(shutil.rmtree, target, True)
        (target / "objects" / "info").mkdir(parents=True)
        (target / "objects" / "info" / "alternates").write_text(f"{wt.mirror / 'objects'}\n")
        ref = target / "refs" / "heads" / wt.branch
        ref.parent.mkdir(parents=True)
        (target / "refs" / "tags").mkdir()
        ref.write_text(f"{head}\n")
        (target / "HEAD").write_text(f"ref: refs/heads/{wt.branch}\n")
        (target / "packed-refs").write_text(
            f"# pack-refs with: peeled fully-peeled sorted \n{wt.base_sha} "
            f"refs/remotes/origin/{wt.base}\n"
        )
        (target / "config").write_text(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
            f"[user]\n\tname = {_config_value(self.author_name)}\n"
            f"\temail = {_config_value(self.author_email)}\n"
            "[gc]\n\tauto = 0\n"
        )
        index = wt.git_dir / "index"
        if index.is_file():
            shutil.copyfile(index, target / "index")
        return target

    def view(self, path: Path) -> tuple[tuple[str, ...], dict[str, str]] | None:
        """How to run a read-only git command (diff, cat-file) on ``path`` — a session's
        worktree, a mirror, a bare remote or a user's checkout — without running anything an
        agent wrote: the git options and environment; None when ``path`` is a worktree whose
        git dir TeleCoder cannot vouch for (its ``.git`` file is the agent's to rewrite)."""
        env = dict(_ISOLATED)
        dot_git = path / ".git"
        if dot_git.is_file() or dot_git.is_symlink():  # a worktree: its admin dir, or nothing
            for mirror in sorted(self.mirrors.glob("*.git")) if self.mirrors.is_dir() else []:
                if _owns(mirror, path):
                    admin = _admin_dir(mirror, path)
                    return ("--git-dir", str(admin), "--work-tree", str(path), *_SAFE), env
            return None
        if not dot_git.exists() and (path / "HEAD").is_file():
            return ("--git-dir", str(path), *_SAFE), env  # a bare repository
        return (*_SAFE,), env

    async def read_base(self, wt: Worktree, name: str, limit: int) -> bytes | None:
        """The file ``name`` as the base commit has it (not as the agent left it); None when
        there is none; at most ``limit`` + 1 bytes."""
        code, out, _ = await _git_status(
            None, "--git-dir", str(wt.mirror), "cat-file", "-s", f"{wt.base_sha}:{name}"
        )
        if code != 0:
            return None
        if int(out.strip() or 0) > limit:
            return b"\0" * (limit + 1)
        proc = await asyncio.create_subprocess_exec(
            "git", "--git-dir", str(wt.mirror), "cat-file", "blob", f"{wt.base_sha}:{name}",
            env=_git_environ(_ISOLATED), stdin=asyncio.subprocess.DEVNULL,
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
        async with _locked(wt.mirror.with_suffix(".lock")):
            _restore_git_dir(wt.mirror, wt.remote_url)
            wt.git_dir.joinpath("config.worktree").unlink(missing_ok=True)
            _restore_dot_git(wt)

    async def commit(self, wt: Worktree, message: str, *, date: float) -> str | None:
        """Commit everything the agent changed; None when nothing changed at all."""
        await _git(wt.path, *wt.git(), "add", "-A", env=_ISOLATED)
        staged = (
            await _git_status(wt.path, *wt.git(), "diff", "--cached", "--quiet", env=_ISOLATED)
        )[0] != 0
        head = (await _git(wt.path, *wt.git(), "rev-parse", "HEAD")).strip()
        if not staged:
            return head if head != wt.base_sha else None
        stamp = f"@{int(date)} +0000"
        env = {
            **_ISOLATED,
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
        }
        await _git(
            wt.path, *wt.git(), "commit", "-q", "--no-verify", "--allow-empty-message", "-F", "-",
            env=env, stdin=message.encode(),
        )  # fmt: skip
        return (await _git(wt.path, *wt.git(), "rev-parse", "HEAD")).strip()

    # --- snapshots: what a commit would hold, without touching the worktree's index ------------

    async def snapshot(self, wt: Worktree) -> str:
        """The tree ``git add -A`` would commit now, made with a private index."""
        with tempfile.TemporaryDirectory(prefix="telecoder-index-") as tmp:
            env = {**_ISOLATED, **await self._private_index(wt, Path(tmp) / "index")}
            await _git(wt.path, *wt.git(), "add", "-A", env=env)
            return (await _git(wt.path, *wt.git(), "write-tree", env=env)).strip()

    async def changed_since(self, wt: Worktree, tree: str) -> list[str]:
        """Paths whose committed content would differ from ``tree``."""
        now = await self.snapshot(wt)
        if now == tree:
            return []
        out = await _git(wt.path, *wt.git(), "diff-tree", "-r", "--name-only", "-z", tree, now)
        return [p for p in out.split("\0") if p]

    async def restore(self, wt: Worktree, tree: str) -> list[str]:
        """Put every path that differs from ``tree`` back as it was; returns those paths."""
        now = await self.snapshot(wt)
        if now == tree:
            return []
        out = await _git(
            wt.path, *wt.git(), "diff-tree", "-r", "--no-renames", "--name-status", "-z", tree, now
        )
        fields = [f for f in out.split("\0") if f]
        changes = list(zip(fields[::2], fields[1::2], strict=True))
        for status, rel in changes:
            if status == "A":
                (wt.path / rel).unlink(missing_ok=True)
        back = [rel for status, rel in changes if status != "A"]
        if back:
            with tempfile.TemporaryDirectory(prefix="telecoder-index-") as tmp:
                env = {**_ISOLATED, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
                await _git(wt.path, *wt.git(), "read-tree", tree, env=env)
                paths = "\0".join(back).encode()
                for rel in back:
                    target = wt.path / rel
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                await _git(
                    wt.path, *wt.git(), "checkout-index", "-f", "-z", "--stdin",
                    env=env, stdin=paths,
                )  # fmt: skip
        return [rel for _, rel in changes]

    async def _private_index(self, wt: Worktree, index: Path) -> dict[str, str]:
        """An index for ``wt`` of its own, starting from a copy of the worktree's (its stat
        cache spares hashing unchanged files)."""
        own = wt.git_dir / "index"
        if own.is_file():
            shutil.copyfile(own, index)
            return {"GIT_INDEX_FILE": str(index)}
        env = {"GIT_INDEX_FILE": str(index)}
        await _git(wt.path, *wt.git(), "read-tree", "HEAD", env=env)
        return env

    async def diff_stats(self, wt: Worktree) -> DiffStats:
        out = await _git(
            wt.path, *wt.git(), "diff", "--numstat", "--no-ext-diff", "--no-textconv",
            wt.base_sha, "HEAD", env=_ISOLATED,
        )  # fmt: skip
        files = insertions = deletions = 0
        for line in out.splitlines():
            added, removed, _ = line.split("\t", 2)
            files += 1
            insertions += int(added) if added.isdigit() else 0
            deletions += int(removed) if removed.isdigit() else 0
        return DiffStats(files_changed=files, insertions=insertions, deletions=deletions)

    async def diff(self, wt: Worktree) -> str:
        return await _git(
            wt.path, *wt.git(), "diff", "--no-ext-diff", "--no-textconv", wt.base_sha, "HEAD",
            env=_ISOLATED,
        )  # fmt: skip

    async def push(self, wt: Worktree, sha: str, env: Mapping[str, str] | None = None) -> bool:
        """Make the remote's ``branch`` point at ``sha``; False when it already did."""
        ref = f"refs/heads/{wt.branch}"
        code, out, err = await _git_status(None, "ls-remote", "--", wt.remote_url, ref, env=env)
        if code != 0:
            raise WorkspaceError(f"cannot read {scrub(wt.remote_url)}: {scrub(_tail(err))}")
        current = out.split("\t", 1)[0].strip() if out.strip() else ""
        if current == sha:
            return False
        for _ in range(2):
            code, _, err = await _git_status(
                wt.mirror, *_SAFE, "push", "--quiet", "--no-verify",
                f"--force-with-lease={ref}:{current}", "--", wt.remote_url, f"{sha}:{ref}",
                env=env,
            )  # fmt: skip
            if code == 0:
                return True
            if (stale := _stale_branch_lock(wt, err)) is None:
                break
            log.warning("removing %s, left behind by a push that was killed", stale)
            stale.unlink(missing_ok=True)
        raise PushRejected(f"push to {scrub(wt.remote_url)} failed: {scrub(_tail(err))}")

    async def remove(self, wt: Worktree) -> None:
        """Done with ``wt``: keep it in the pool for the next session, or delete it."""
        async with _locked(wt.mirror.with_suffix(".lock")):
            if not await self._release(wt):
                await self._discard(wt.mirror, wt.path)

    async def remove_path(self, path: Path) -> None:
        """Delete the worktree at ``path`` (one a chat kept), wherever its mirror is."""
        for mirror in sorted(self.mirrors.glob("*.git")) if self.mirrors.is_dir() else []:
            if _owns(mirror, path):
                async with _locked(mirror.with_suffix(".lock")):
                    await self._discard(mirror, path)
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


# --- the mirror's own files -----------------------------------------------------------------


def _config_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _admin_dir(mirror: Path, worktree: Path) -> Path:
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


def _head_of(wt: Worktree) -> str | None:
    """The commit the worktree's branch is at, read from the mirror's own files (None: ask
    git): cheaper than a git process on the way to starting the agent."""
    try:
        head = (wt.git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: refs/heads/"):
            return head if _SHA.match(head) else None
        sha = (wt.mirror / head.removeprefix("ref: ")).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return sha if _SHA.match(sha) else None


def _owns(mirror: Path, worktree: Path) -> bool:
    try:
        _admin_dir(mirror, worktree)
    except WorkspaceError:
        return False
    return True


def _restore_dot_git(wt: Worktree) -> None:
    """Point the worktree's ``.git`` back at its admin dir (the agent may have replaced it)."""
    dot_git = wt.path / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink():
        shutil.rmtree(dot_git)
    else:
        dot_git.unlink(missing_ok=True)
    dot_git.write_text(f"gitdir: {wt.git_dir}\n")


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


def _restore_git_dir(mirror: Path, remote_url: str) -> None:
    """Write the mirror's config as TeleCoder made it; drop hooks and attribute files."""
    config = (
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"
        # Objects readable by a sandbox's uid (it reads them through alternates), whatever
        # TeleCoder's umask; the mirror itself stays in TeleCoder's private home.
        "\tsharedRepository = 0644\n"
        '[remote "origin"]\n'
        f"\turl = {_config_value(remote_url)}\n"
        "\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
        "[gc]\n\tauto = 0\n"
    )
    tmp = mirror / "config.telecoder-tmp"
    tmp.write_text(config)
    tmp.replace(mirror / "config")
    _share_objects(mirror / "objects")
    shutil.rmtree(mirror / "hooks", ignore_errors=True)
    (mirror / "info" / "attributes").unlink(missing_ok=True)


# --- running git ----------------------------------------------------------------------------

_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GCM_INTERACTIVE": "never",
    "LC_ALL": "C",
    "GIT_OPTIONAL_LOCKS": "0",
}


def _git_environ(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_GIT_ENV)
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if extra:
        env.update(extra)
    return env


async def _git_status(
    cwd: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    unlock: Path | None = None,
) -> tuple[int, str, str]:
    """Run git. ``unlock``: a mirror whose lock the caller holds, so any git lock file in it is
    one that a killed git left behind; such a lock is removed and the command run again."""
    for _ in range(_UNLOCK_TRIES):
        code, out, err = await _run_git(cwd, args, env, stdin)
        stale = _stale_lock(err, unlock, cwd) if code != 0 and unlock is not None else None
        if stale is None:
            break
        log.warning("removing %s, left behind by a git that was killed", stale)
        stale.unlink(missing_ok=True)
    return code, out, err


def _stale_lock(err: str, inside: Path, cwd: Path | None) -> Path | None:
    match = _LOCKED.search(err)
    if match is None:
        return None
    lock = Path(match["lock"] or match["config"] + ".lock")
    lock = (cwd / lock if cwd is not None else lock).resolve()
    root = inside.resolve()
    return lock if lock.is_relative_to(root) and lock.is_file() else None


def _drop_half_made_worktrees(mirror: Path) -> None:
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


def _stale_branch_lock(wt: Worktree, err: str) -> Path | None:
    """The lock on the session's own branch in a remote on this host, left by a push whose
    receiving git was killed along with the worker (a server's receive-pack outlives the
    client; a local one dies with it). The session's lease says nobody else pushes there."""
    if is_url(wt.remote_url) and not wt.remote_url.startswith("file://"):
        return None
    remote = Path(urlsplit(wt.remote_url).path if is_url(wt.remote_url) else wt.remote_url)
    expected = (remote / "refs" / "heads" / f"{wt.branch}.lock").resolve()
    match = _LOCKED.search(err)
    if match is None or match["lock"] is None or Path(match["lock"]).resolve() != expected:
        return None
    try:
        age = time.time() - expected.stat().st_mtime
    except FileNotFoundError:
        return None
    return expected if age > _STALE_PUSH_LOCK_SECONDS else None


async def _run_git(
    cwd: Path | None, args: tuple[str, ...], env: Mapping[str, str] | None, stdin: bytes | None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=_git_environ(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    code = proc.returncode
    assert code is not None
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def _git(
    cwd: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    unlock: Path | None = None,
) -> str:
    code, out, err = await _git_status(cwd, *args, env=env, stdin=stdin, unlock=unlock)
    if code != 0:
        verb = next(a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] != "-c")
        raise WorkspaceError(f"git {verb} failed: {scrub(_tail(err))}")
    return out


# A lock file in the way: "Unable to create '/m/refs/remotes/origin/x.lock': File exists" (refs,
# index, packed-refs) or "could not lock config file /m/config: File exists".
_LOCKED = re.compile(
    r"Unable to create '(?P<lock>[^']+\.lock)': File exists"
    r"|could not lock config file (?P<config>\S+): File exists"
)
_UNLOCK_TRIES = 10
_STALE_PUSH_LOCK_SECONDS = 2.0  # a live push holds a ref lock for milliseconds

# git's words for "this will not work however often you try".
_PERMANENT = re.compile(
    r"could not read Username|Authentication failed|Permission denied|"
    r"[Rr]epository not found|does not appear to be a git repository|HTTP 40[134]",
)


def _unreadable(remote_url: str, err: str) -> str:
    message = f"cannot read {scrub(remote_url)}: {scrub(_tail(err))}"
    if re.search(r"could not read Username|Authentication failed|HTTP 401", err):
        message += " (authentication required: set GITHUB_TOKEN, or use an ssh URL with a key)"
    return message


def _tail(text: str, limit: int = 1000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive lock shared by every worker process on this host."""
    private.make_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, private.FILE_MODE)
    try:
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)
