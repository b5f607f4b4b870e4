"""Pinning where a strict orch run's code task starts: the commit the user's checkout is at,
refused while the checkout has changes the session would not see (``telecoder orch``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from telecoder.errors import BadInput
from telecoder.gitcmd import SAFE, git_check
from telecoder.worktree import RepoSource


async def dirty_paths(checkout: Path) -> list[str]:
    """The paths ``git status`` reports changed or untracked in the user's checkout."""
    code, out, err = await git_check(
        checkout, *SAFE, "--no-optional-locks", "status", "--porcelain", "-z"
    )
    if code != 0:
        raise BadInput(f"git status failed in {checkout}: {err.strip()[-500:]}")
    entries = out.split("\0")
    found: list[str] = []
    skip = False
    for entry in entries:
        if skip:  # the source path of a rename
            skip = False
            continue
        if len(entry) > 3:
            found.append(entry[3:])
            skip = entry[0] in "RC"
    return found


async def head_commit(source: RepoSource) -> str | None:
    """The commit a strict run pins: the checkout's HEAD, else the remote's HEAD (None when
    it cannot be read: the remote's default branch is used)."""
    if source.checkout is not None:
        code, out, _ = await git_check(source.checkout, *SAFE, "rev-parse", "--verify", "HEAD")
        if code == 0 and out.strip():
            return out.strip()
        return None
    code, out, _ = await git_check(None, "ls-remote", "--", source.remote_url, "HEAD")
    sha = out.split("\t", 1)[0].strip() if code == 0 else ""
    return sha or None


def dirty_message(task: str, checkout: Path, dirty: Sequence[str]) -> str:
    shown = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
    return (
        f"task {task!r}: the checkout {checkout} has uncommitted changes ({shown}); the "
        "session starts from a commit and would not see them. In a strict run a code task "
        "needs a clean checkout or an explicit base: commit or stash them, or give --base REF"
    )
