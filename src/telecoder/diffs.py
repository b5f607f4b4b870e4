"""The diff of a session's branch, read with git from wherever its commits still are.

This is a seam (``telecoder.server.diff`` re-exports it; a best-of-N run's judge reads the
candidates' diffs with it): ``create_app(..., diff_source=...)`` takes any ``DiffSource``. The
default looks in the attempt's worktree, then the repository's mirror (worktrees share its
objects, so their commits stay there after the worktree is gone), then the remote when it is a
local path, and diffs the attempt's base commit with its commit — or with the work tree while
nothing is committed yet.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from telecoder.domain import Attempt, EventKind, ResultType, Session
from telecoder.errors import Conflict, TeleCoderError
from telecoder.store import Store
from telecoder.workspace import Workspace, is_url

MAX_DIFF_BYTES = 2 << 20


class DiffUnavailable(TeleCoderError):
    """There is no diff to show for this session."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Diff:
    attempt: int
    base_sha: str
    head_sha: str | None
    text: str
    truncated: bool
    files_changed: int
    insertions: int
    deletions: int


DiffSource = Callable[[Session, Sequence[Attempt]], Awaitable[Diff]]


def git_diff_source(workspace: Workspace) -> DiffSource:
    async def diff(session: Session, attempts: Sequence[Attempt]) -> Diff:
        attempt = next((a for a in reversed(attempts) if a.base_sha), None)
        if attempt is None or attempt.base_sha is None:
            if session.status.terminal:
                raise DiffUnavailable(f"session {session.id} ended without a workspace: no diff")
            raise Conflict(f"session {session.id} has no workspace yet: no diff to show")
        head = attempt.commit_sha or attempt.pushed_sha
        if head is None and session.result is not None and session.result.commit:
            head = session.result.commit
        if head is None and session.result is not None and session.result.type == ResultType.TEXT:
            raise DiffUnavailable(f"session {session.id} answered in text: it changed nothing")
        for place in await _places(workspace, session, attempt):
            if head is None and place != _worktree(attempt):
                continue  # uncommitted changes live only in the worktree
            found = await _diff_in(workspace, place, attempt.base_sha, head)
            if found is not None:
                text, truncated, stats = found
                return Diff(
                    attempt=attempt.number,
                    base_sha=attempt.base_sha,
                    head_sha=head,
                    text=text,
                    truncated=truncated,
                    files_changed=stats[0],
                    insertions=stats[1],
                    deletions=stats[2],
                )
        raise DiffUnavailable(
            f"the commits of session {session.id} are no longer on this host: no diff to show"
        )

    return diff


def _worktree(attempt: Attempt) -> Path | None:
    return Path(attempt.workspace_path) if attempt.workspace_path else None


async def _places(workspace: Workspace, session: Session, attempt: Attempt) -> list[Path]:
    places: list[Path] = []
    if (worktree := _worktree(attempt)) is not None:
        places.append(worktree)
    try:
        source = await workspace.resolve(session.repo)
    except TeleCoderError:  # the repository is gone; the mirror may still be there
        places.append(workspace.mirror_path(session.repo))
    else:
        places.append(workspace.mirror_path(source.remote_url))
        if not is_url(source.remote_url):
            places.append(Path(source.remote_url))
        if source.checkout is not None:
            places.append(source.checkout)
    return [p for p in places if p.is_dir()]


async def _git(
    cwd: Path, view: tuple[tuple[str, ...], dict[str, str]], *args: str
) -> tuple[int, bytes]:
    options, isolated = view
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", **isolated}
    proc = await asyncio.create_subprocess_exec(
        "git",
        *options,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out


async def _diff_in(
    workspace: Workspace, place: Path, base: str, head: str | None
) -> tuple[str, bool, tuple[int, int, int]] | None:
    # The git dir TeleCoder decided, no hook, fsmonitor, textconv or external diff: an agent
    # may have written any of them into the worktree it leaves behind.
    view = workspace.view(place)
    if view is None:
        return None
    for sha in (base, head):
        if sha is not None:
            code, _ = await _git(place, view, "cat-file", "-e", f"{sha}^{{commit}}")
            if code != 0:
                return None
    span = [base, head] if head is not None else [base]
    safe = ("--no-ext-diff", "--no-textconv", "--no-renames")
    code, numstat = await _git(place, view, "diff", "--numstat", *safe, *span, "--")
    if code != 0:
        return None
    code, patch = await _git(place, view, "diff", "--no-color", *safe, *span, "--")
    if code != 0:
        return None
    files = insertions = deletions = 0
    for line in numstat.decode(errors="replace").splitlines():
        added, removed, _ = [*line.split("\t", 2), "", ""][:3]
        files += 1
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    truncated = len(patch) > MAX_DIFF_BYTES
    text = patch[:MAX_DIFF_BYTES].decode(errors="replace")
    return text, truncated, (files, insertions, deletions)


async def failed_attempt_diff(store: Store, session: Session) -> Diff:
    """The work of the last attempt whose checks failed (``verify_failed``: nothing was pushed),
    as kept on its error event; ``DiffUnavailable`` when none was kept."""
    for event in await store.events.latest_of_kind(session.id, EventKind.ERROR):
        patch = event.data.get("patch")
        if not isinstance(patch, str):
            continue
        number = event.attempt or session.attempt
        attempts = {a.number: a for a in await store.sessions.attempts(session.id)}
        found = attempts.get(number)
        files, plus, minus = patch_stats(patch)
        return Diff(
            attempt=number,
            base_sha=(found.base_sha if found else None) or "",
            head_sha=None,
            text=patch,
            truncated=bool(event.data.get("patch_truncated")),
            files_changed=files,
            insertions=plus,
            deletions=minus,
        )
    raise DiffUnavailable(
        f"session {session.id} has no failed attempt's diff (kept on verify_failed)"
    )


def patch_stats(patch: str) -> tuple[int, int, int]:
    """Files, insertions and deletions of a unified diff."""
    files = plus = minus = 0
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            files += 1
        elif line.startswith("+") and not line.startswith("+++ "):
            plus += 1
        elif line.startswith("-") and not line.startswith("--- "):
            minus += 1
    return files, plus, minus
