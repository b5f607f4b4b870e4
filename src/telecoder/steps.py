"""Multi-step tasks: a session's ``steps`` run in order in one attempt and one agent
conversation (each step a turn resuming the agent's session, like a chat's turns), with a
checkpoint commit pushed after each step.

The first step that fails stops the rest: what the steps before it did is on the branch (their
checkpoints were pushed), and the failure names the step (``step 2 of 3 failed: …``). Each step
is checked like a task (``.telecoder.yml`` verify and checks, with revisions). A new attempt
(after a crash) starts again from the first step in a fresh worktree: the checkpoints it pushes
replace the earlier attempt's (the push is ``--force-with-lease`` on what the remote had).
"""

from __future__ import annotations

from dataclasses import replace

from telecoder import repoconfig
from telecoder.confine import Confiner
from telecoder.domain import FailureKind, Lease, Result, ResultType, Session
from telecoder.endings import check, commit_message, forge_secrets
from telecoder.protocols import Engine, EngineTask, Forge, Usage
from telecoder.publishing import Publisher
from telecoder.recorder import AttemptControl, EventRecorder, clip
from telecoder.revisions import AgentWork, Work, add_usage
from telecoder.workspace import Workspace, Worktree

MAX_STEPS = 20


def step_prompt(engine: Engine, steps: tuple[str, ...], number: int) -> str:
    """What the agent is asked at step ``number`` (1-based); a shell step is its command."""
    text = steps[number - 1]
    if not getattr(engine, "instructed", True):
        return text
    return f"Step {number} of {len(steps)} of the task: {text}"


class StepRunner:
    def __init__(
        self, *, agent_work: AgentWork, workspace: Workspace, publisher: Publisher
    ) -> None:
        self.agent_work = agent_work
        self.workspace = workspace
        self.publisher = publisher

    async def work(
        self,
        session: Session,
        engine: Engine,
        task: EngineTask,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        forge: Forge,
        confiner: Confiner | None = None,
    ) -> Work:
        """Run the steps; the work of them all (``checkpoint``: the last pushed commit)."""
        steps = session.steps
        usage = Usage()
        resume = task.resume_id
        checkpoint: str | None = None
        work = Work(None, usage)
        for number in range(1, len(steps) + 1):
            recorder.progress("step_started", number=number, of=len(steps), text=steps[number - 1])
            step = replace(task, prompt=step_prompt(engine, steps, number), resume_id=resume)
            work = await self.agent_work.work(
                engine, step, config, wt, lease, recorder, control, confiner
            )
            usage = add_usage(usage, work.usage)
            resume = work.session_id or resume
            if work.failure is not None:
                kind, error = work.failure
                message = f"step {number} of {len(steps)} failed: {error}"
                data = {"number": number, "of": len(steps), "checkpoint": checkpoint}
                recorder.progress("step_failed", **data)
                return replace(work, usage=usage, failure=(kind, message), checkpoint=checkpoint)
            sha = await self._checkpoint(
                session, wt, lease, forge, recorder, control, config, number
            )
            if isinstance(sha, tuple):  # a secret in what the step added: nothing pushed
                return replace(work, usage=usage, failure=sha, checkpoint=checkpoint)
            checkpoint = sha or checkpoint
        return replace(work, usage=usage, checkpoint=checkpoint)

    async def _checkpoint(
        self,
        session: Session,
        wt: Worktree,
        lease: Lease,
        forge: Forge,
        recorder: EventRecorder,
        control: AttemptControl,
        config: repoconfig.RepoConfig,
        number: int,
    ) -> str | tuple[FailureKind, str] | None:
        """Commit and push what step ``number`` changed; its commit (None: it changed nothing),
        or the failure of the secret scan."""
        await self.workspace.sanitize(wt)
        subject = f"Step {number}/{len(session.steps)}: {session.steps[number - 1]}"
        sha = await self.workspace.commit(
            wt, commit_message(session, subject), date=session.created_at
        )
        if sha is None:
            recorder.progress("step_done", number=number, changed=False)
            return None
        if (leaked := await self.publisher.scan(wt, config, recorder)) is not None:
            return (FailureKind.SECRET_DETECTED, leaked)
        await self.publisher.confirm_lease(lease, control)
        await forge.ready(wt.remote_url)
        recorder.masker = recorder.masker.adding(forge_secrets(forge, wt.remote_url))
        await self.workspace.push(wt, sha, env=forge.git_env(wt.remote_url))
        check(control)
        recorder.progress("step_done", number=number, changed=True, branch=wt.branch, commit=sha)
        return sha


def partial_result(wt: Worktree, work: Work) -> Result | None:
    """What a multi-step task that stopped at a failed step leaves: the branch with the
    earlier steps' commits (None when none changed anything)."""
    if work.checkpoint is None:
        return None
    return Result(
        type=ResultType.BRANCH,
        branch=wt.branch,
        commit=work.checkpoint,
        text=clip(work.text),
        partial=True,
    )
