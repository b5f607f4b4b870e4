"""Publishing an attempt's commit: what it adds scanned for secrets, the lease confirmed right
before anything leaves the host, the branch pushed and the pull request opened or updated (a
draft for a partial result; none for a session on a pull request's own branch); and, when asked,
a ``verify_failed`` attempt's work pushed to ``telecoder/<id>-failed`` (``push_failed``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from telecoder import autonomy, repoconfig, risk, secretscan
from telecoder.channels import github as github_channel
from telecoder.domain import (
    EventKind,
    FailureKind,
    Lease,
    Result,
    ResultType,
    RunKind,
    Session,
)
from telecoder.endings import check, commit_message, forge_secrets
from telecoder.errors import ForgeError, WorkspaceError
from telecoder.protocols import Forge, Publication, Published
from telecoder.recorder import AttemptControl, EventRecorder, StopReason
from telecoder.store import Store
from telecoder.workspace import Workspace, Worktree

log = logging.getLogger(__name__)


def failed_ref(session: Session) -> str:
    """The branch a verify_failed session's work is pushed to (``push_failed``)."""
    return f"telecoder/{session.id}-failed"


class Publisher:
    def __init__(self, *, store: Store, workspace: Workspace) -> None:
        self.store = store
        self.workspace = workspace

    async def publish(
        self,
        session: Session,
        lease: Lease,
        wt: Worktree,
        forge: Forge,
        sha: str,
        recorder: EventRecorder,
        control: AttemptControl,
        text: str | None = None,
        partial: FailureKind | None = None,
        config: repoconfig.RepoConfig | None = None,
        review: str | None = None,
    ) -> Result:
        """``review``: the review stage's section of the pull request's body."""
        stats = await self.workspace.diff_stats(wt)
        await self.confirm_lease(lease, control)
        recorder.progress("pushing", branch=wt.branch, commit=sha)
        # Credentials as they are now: an installation token taken at the start may have
        # expired during a long run.
        await forge.ready(wt.remote_url)
        recorder.masker = recorder.masker.adding(forge_secrets(forge, wt.remote_url))
        pushed = await self.workspace.push(wt, sha, env=forge.git_env(wt.remote_url))
        recorder.progress("pushed" if pushed else "already_pushed", branch=wt.branch, commit=sha)
        why = partial.value if partial else None
        title, _, body = commit_message(session, partial=why).partition("\n")
        body = body.strip() or session.prompt
        if review:
            body = f"{body.rstrip()}\n\n{review.strip()}"
        if (pull := github_channel.on_pull_request(session.origin)) is not None:
            published = Published(number=pull)  # its own branch: the pull request is there
        elif await self.candidate(session):
            published = Published()  # best of N: the winner's is opened once all ended
        else:
            published = await forge.publish(
                Publication(
                    session_id=session.id,
                    remote_url=wt.remote_url,
                    branch=wt.branch,
                    base=wt.base,
                    title=title,
                    body=github_channel.pull_request_body(session.origin, body),
                    draft=partial is not None,
                )
            )
        if published.url:
            recorder.progress("pull_request", url=published.url, number=published.number)
        tier = None
        if pull is None and published.number is not None:  # a pull request TeleCoder opened
            tier = await self._review(wt, forge, published.number, sha, recorder, partial, config)
        return Result(
            type=ResultType.BRANCH,
            branch=wt.branch,
            commit=sha,
            pr_url=published.url,
            pr_number=published.number,
            text=text,
            diff=stats,
            partial=partial is not None,
            risk=tier,
        )

    async def push_failed(
        self,
        session: Session,
        lease: Lease,
        wt: Worktree,
        forge: Forge,
        recorder: EventRecorder,
        control: AttemptControl,
        config: repoconfig.RepoConfig,
        result: Result | None,
    ) -> Result | None:
        """Push the work whose checks kept failing to ``telecoder/<id>-failed`` (no pull
        request); ``result`` with its ``failed_ref``, or as it was when nothing was pushed.

        Once even when redone: the commit is deterministic (fixed date and message), and the
        push is skipped when the remote has it already. What would leak a secret stays here.
        """
        await self.workspace.sanitize(wt)
        message = commit_message(session, partial=FailureKind.VERIFY_FAILED.value)
        sha = await self.workspace.commit(wt, message, date=session.created_at)
        if sha is None:
            return result  # nothing changed: nothing to keep
        ref = failed_ref(session)
        diff = await self.workspace.diff(wt)
        allow = config.secrets.allow
        if await asyncio.to_thread(secretscan.scan, diff, recorder.masker, allow):
            recorder.progress("failed_not_pushed", branch=ref, reason="secret_detected")
            return result
        await self.confirm_lease(lease, control)
        try:
            await forge.ready(wt.remote_url)
            recorder.masker = recorder.masker.adding(forge_secrets(forge, wt.remote_url))
            target = dataclasses.replace(wt, branch=ref)
            pushed = await self.workspace.push(target, sha, env=forge.git_env(wt.remote_url))
        except (WorkspaceError, ForgeError) as e:  # the checks' failure is reported either way
            log.warning("session %s: cannot push %s: %s", session.id, ref, e.message)
            recorder.progress("failed_not_pushed", branch=ref, reason=e.message)
            return result
        step = "failed_pushed" if pushed else "failed_already_pushed"
        recorder.progress(step, branch=ref, commit=sha)
        if result is None:
            return Result(type=ResultType.TEXT, failed_ref=ref)
        return dataclasses.replace(result, failed_ref=ref)

    async def _review(
        self,
        wt: Worktree,
        forge: Forge,
        number: int,
        sha: str,
        recorder: EventRecorder,
        partial: FailureKind | None,
        config: repoconfig.RepoConfig | None,
    ) -> dict[str, object]:
        """The pull request's risk tier as a label, and its merge where allowed."""
        stats = await self.workspace.diff_stats(wt)
        found = risk.assess(
            await self.workspace.changed_paths(wt),
            insertions=stats.insertions,
            deletions=stats.deletions,
            checks=recorder.checks,
        )
        entry = await autonomy.review(
            forge,
            wt.remote_url,
            number,
            found,
            auto_merge=config.auto_merge if config is not None else "off",
            checks=recorder.checks,
            sha=sha,
            draft=partial is not None,
        )
        recorder.progress("risk", **entry)
        return entry

    async def candidate(self, session: Session) -> bool:
        """Whether ``session`` is a candidate of a best-of-N run: it pushes its branch only."""
        if session.run_id is None:
            return False
        return (await self.store.runs.get(session.run_id)).kind == RunKind.BEST_OF

    async def confirm_lease(self, lease: Lease, control: AttemptControl) -> None:
        """Renew the lease right before an effect outside the database (push, pull request).

        A worker that was paused or cut off past its lease learns it here, and does nothing;
        a cancel requested meanwhile stops the attempt before it publishes.
        """
        check(control)
        beat = await self.store.queue.heartbeat(lease)  # LeaseLost if it is gone
        if beat.cancel_requested:
            control.stop(StopReason.CANCELLED)
        check(control)

    async def scan(
        self, wt: Worktree, config: repoconfig.RepoConfig, recorder: EventRecorder
    ) -> str | None:
        """Scan what the commit adds for secrets before anything is pushed; the error if any."""
        recorder.progress("scanning_for_secrets")
        diff = await self.workspace.diff(wt)
        allow = config.secrets.allow
        found = await asyncio.to_thread(secretscan.scan, diff, recorder.masker, allow)
        if not found:
            return None
        message = secretscan.report(found)
        kind = FailureKind.SECRET_DETECTED
        recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": message})
        return message
