"""Snapshots of a worktree: the tree ``git add -A`` would commit now, made with a private index
(the worktree's own is left alone); what changed since one; and paths put back as they were.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from telecoder.gitcmd import ISOLATED, git_out
from telecoder.worktree import Worktree


async def snapshot(wt: Worktree) -> str:
    """The tree ``git add -A`` would commit now, made with a private index."""
    with tempfile.TemporaryDirectory(prefix="telecoder-index-") as tmp:
        env = {**ISOLATED, **await _private_index(wt, Path(tmp) / "index")}
        await git_out(wt.path, *wt.git(), "add", "-A", env=env)
        return (await git_out(wt.path, *wt.git(), "write-tree", env=env)).strip()


async def changed_since(wt: Worktree, tree: str) -> list[str]:
    """Paths whose committed content would differ from ``tree``."""
    now = await snapshot(wt)
    if now == tree:
        return []
    out = await git_out(wt.path, *wt.git(), "diff-tree", "-r", "--name-only", "-z", tree, now)
    return [p for p in out.split("\0") if p]


async def restore(wt: Worktree, tree: str) -> list[str]:
    """Put every path that differs from ``tree`` back as it was; returns those paths."""
    now = await snapshot(wt)
    if now == tree:
        return []
    out = await git_out(
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
            env = {**ISOLATED, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
            await git_out(wt.path, *wt.git(), "read-tree", tree, env=env)
            paths = "\0".join(back).encode()
            for rel in back:
                target = wt.path / rel
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
            await git_out(
                wt.path, *wt.git(), "checkout-index", "-f", "-z", "--stdin",
                env=env, stdin=paths,
            )  # fmt: skip
    return [rel for _, rel in changes]


async def _private_index(wt: Worktree, index: Path) -> dict[str, str]:
    """An index for ``wt`` of its own, starting from a copy of the worktree's (its stat
    cache spares hashing unchanged files)."""
    own = wt.git_dir / "index"
    if own.is_file():
        shutil.copyfile(own, index)
        return {"GIT_INDEX_FILE": str(index)}
    env = {"GIT_INDEX_FILE": str(index)}
    await git_out(wt.path, *wt.git(), "read-tree", "HEAD", env=env)
    return env
