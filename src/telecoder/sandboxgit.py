"""The agent's own git dir for its worktree, mounted over the worktree's admin dir inside the
sandbox: the agent's git works while nothing it does reaches the mirror or the host's git.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from telecoder.gitcmd import ISOLATED, git_out
from telecoder.mirrors import config_value
from telecoder.worktree import Worktree, head_of


async def sandbox_git_dir(
    wt: Worktree, target: Path, *, author_name: str, author_email: str
) -> Path:
    """A git dir of the agent's own for ``wt``, made at ``target``, to be mounted over the
    worktree's admin dir inside the sandbox.

    It holds the branch at the worktree's HEAD, ``origin/<base>``, a copy of the index and a
    plain config; the mirror's objects are read through ``alternates`` (mounted read-only),
    new objects are written here. So the agent's git works (status, diff, add, commit)
    while nothing it does reaches the mirror's config, hooks, refs or objects, another
    session, or TeleCoder's own git on the host, which commits the work tree itself.
    """
    head = (
        head_of(wt)
        or (await git_out(wt.path, *wt.git(), "rev-parse", "HEAD", env=ISOLATED)).strip()
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
        f"[user]\n\tname = {config_value(author_name)}\n"
        f"\temail = {config_value(author_email)}\n"
        "[gc]\n\tauto = 0\n"
    )
    index = wt.git_dir / "index"
    if index.is_file():
        shutil.copyfile(index, target / "index")
    return target
