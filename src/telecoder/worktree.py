"""What a session's git is made of: where its code comes from (``RepoSource``) and the worktree
made for it (``Worktree``), which git reaches only through the admin dir TeleCoder found for it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from telecoder.gitcmd import SAFE, SHA


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
        return ("--git-dir", str(self.git_dir), "--work-tree", str(self.path), *SAFE)


def head_of(wt: Worktree) -> str | None:
    """The commit the worktree's branch is at, read from the mirror's own files (None: ask
    git): cheaper than a git process on the way to starting the agent."""
    try:
        head = (wt.git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: refs/heads/"):
            return head if SHA.match(head) else None
        sha = (wt.mirror / head.removeprefix("ref: ")).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return sha if SHA.match(sha) else None


def restore_dot_git(wt: Worktree) -> None:
    """Point the worktree's ``.git`` back at its admin dir (the agent may have replaced it)."""
    dot_git = wt.path / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink():
        shutil.rmtree(dot_git)
    else:
        dot_git.unlink(missing_ok=True)
    dot_git.write_text(f"gitdir: {wt.git_dir}\n")
