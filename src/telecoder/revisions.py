"""The agent's work in an attempt: the repository's setup commands, then the agent run; while
the repository's checks fail, its session resumed with the report, up to ``max_revisions``
times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from telecoder import repoconfig
from telecoder.agentrun import AgentRunner
from telecoder.confine import Confiner
from telecoder.domain import EventKind, FailureKind, Lease
from telecoder.endings import check
from telecoder.gateway import Gateway
from telecoder.protocols import Engine, EngineTask, Usage
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.store import Store
from telecoder.verify import (
    CheckReport,
    Verifier,
    failure_summary,
    revision_prompt,
    setup_failure,
)
from telecoder.workspace import Workspace, Worktree


@dataclass(frozen=True, slots=True)
class Work:
    """What the agent did, revisions included."""

    text: str | None
    usage: Usage
    failure: tuple[FailureKind, str] | None = None
    resumable: bool = False  # the agent's session can be resumed (to answer a question)
    session_id: str | None = None  # the agent's own session, to resume it (``steps``)
    checkpoint: str | None = None  # a multi-step task: the last step's commit, pushed


class AgentWork:
    def __init__(
        self,
        *,
        store: Store,
        workspace: Workspace,
        verifier: Verifier,
        runner: AgentRunner,
        gateway: Gateway | None,
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.verifier = verifier
        self.runner = runner
        self.gateway = gateway

    async def work(
        self,
        engine: Engine,
        task: EngineTask,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> Work:
        """Run the agent; while the repository's checks fail, resume its session with the
        report, up to ``max_revisions`` times."""
        usage = Usage()
        revision = 0
        while True:
            recorder.progress(
                "engine_started" if revision == 0 else "revision_started",
                engine=engine.name,
                model=task.model,
                revision=revision,
                resumed=task.resume_id is not None,
            )
            raw_log = self.runner.raw_log(lease, revision, recorder.masker)
            try:
                result = await self.runner.run(
                    engine,
                    task,
                    recorder,
                    control,
                    raw_log,
                    confiner.for_role("agent") if confiner else None,
                )
            finally:
                if raw_log is not None:
                    raw_log.close()
            if self.gateway is None:  # else the gateway metered every request already
                usage = add_usage(usage, result.usage)
            if result.session_id:  # before a stop is acted on: a budget's may resume it
                await self.store.queue.record(lease, engine_session_id=result.session_id)
            check(control)
            if not result.ok:
                failure = result.failure_kind or FailureKind.ENGINE_ERROR
                error = result.error or f"{engine.name} failed"
                return Work(result.text, usage, (failure, error), session_id=result.session_id)
            if not config.has_checks:
                return Work(result.text, usage, session_id=result.session_id)
            failed = await self.verify(config, wt, task.home, revision, recorder, control, confiner)
            if not failed:
                recorder.progress("verified", revision=revision)
                return Work(result.text, usage, session_id=result.session_id)
            resumable = result.session_id is not None
            if revision >= config.max_revisions or not resumable:
                summary = failure_summary(failed, revision, resumable=resumable)
                kind = FailureKind.VERIFY_FAILED
                recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": summary})
                return Work(
                    result.text,
                    usage,
                    (kind, summary),
                    resumable=resumable,
                    session_id=result.session_id,
                )
            revision += 1
            task = replace(task, prompt=revision_prompt(failed), resume_id=result.session_id)

    async def setup(
        self,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        home: Path,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> str | None:
        """Run the repository's setup commands; the session's error when one fails."""
        recorder.progress("setting_up", commands=len(config.setup))
        await self.workspace.sanitize(wt)

        def report(check: CheckReport) -> None:
            recorder.add(EventKind.SETUP, check.to_dict())

        failed = await self.verifier.setup(
            config,
            wt,
            env=self.verify_env(home),
            stopped=control.wait,
            report=report,
            confinement=confiner.for_role("setup") if confiner else None,
        )
        check(control)
        if failed is None:
            return None
        message = setup_failure(failed)
        kind = FailureKind.SETUP_FAILED
        recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": message})
        return message

    async def verify(
        self,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        home: Path,
        revision: int,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> list[CheckReport]:
        """Run the checks; the failed ones."""
        recorder.progress("verifying", revision=revision)
        await self.workspace.sanitize(wt)  # host git snapshots the worktree: nothing may run

        def report(check: CheckReport) -> None:
            recorder.add(EventKind.VERIFY, {**check.to_dict(), "revision": revision})

        reports = await self.verifier.run(
            config,
            wt,
            env=self.verify_env(home),
            stopped=control.wait,
            report=report,
            confinement=confiner.for_role("verify") if confiner else None,
        )
        check(control)
        return [r for r in reports if not r.ok]

    def verify_env(self, home: Path) -> dict[str, str]:
        """The allow-listed environment the agent gets too, without any model key."""
        (home / "verify").mkdir(parents=True, exist_ok=True)
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return {
            **self.runner.allowed_env(),
            "HOME": str(home / "verify"),
            "TMPDIR": str(home / "tmp"),
        }


def add_usage(total: Usage, more: Usage | None) -> Usage:
    """Usage of several agent runs (a revision is a run of its own, its cost its own)."""
    if more is None:
        return total
    cost = None
    if total.cost_usd is not None or more.cost_usd is not None:
        cost = (total.cost_usd or 0.0) + (more.cost_usd or 0.0)
    return Usage(
        input_tokens=total.input_tokens + more.input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
        cost_usd=cost,
    )
