"""One attempt of a session, top to bottom (ARCHITECTURE §3).

    prepare workspace (a chat's later turn: reopen its kept worktree) → read .telecoder.yml
    → run engine → verify → on failure resume the same agent session with the report
      (≤ max_revisions) → review (``review``: blocking findings resume it too, ≤ max_revisions)
    → (events masked, capped and recorded in batches all along)
    → commit → secret scan → push → open/update PR  |  no change → the engine's answer
    → finish the attempt (a chat: ``blocked``, waiting for a message; an agent that asks, or
      checks that keep failing in a watched session: ``blocked`` with its ``question``, see
      ``questions``) → clean up

Every step can be redone by a later attempt without a second commit, push or PR: the worktree
is made afresh, the commit is deterministic, the push is skipped when the remote already has it,
and the forge finds the PR it opened before. ``AttemptControl`` carries why an attempt must stop
early (cancel, timeout, stall, shutdown, lost lease); whoever notices sets it.

The steps live in their own modules: ``preparing`` (ticket, turn, worktree, engine, confiner),
``revisions`` (setup, the agent, checks, resumes), ``steps`` (multi-step tasks), ``review``,
``concluding`` (failed work, commit → scan → publish → answer, a partial result when stopped
by a limit), ``remembering`` and ``cleanup``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from telecoder import agentinbox, budgeting, questions, readonly, repoconfig, reviewers, tracing
from telecoder.agentrun import AgentRunner
from telecoder.budgeting import Deadline
from telecoder.cleanup import Cleaner
from telecoder.concluding import Concluder
from telecoder.domain import (
    FailureKind,
    Lease,
    Mode,
    Session,
    SessionStatus,
)
from telecoder.endings import (
    Stopped,
    check,
    failed,
    forge_secrets,
    masked,
    stopped_outcome,
)
from telecoder.errors import (
    BadInput,
    ForgeError,
    LeaseLost,
    SandboxUnavailable,
    StoreUnavailable,
    WorkspaceError,
)
from telecoder.gateway import Gateway, Ticket
from telecoder.masking import Masker, url_credentials
from telecoder.preparing import Preparer
from telecoder.protocols import (
    Engine,
    EngineTask,
    Forge,
    Runtime,
)
from telecoder.publishing import Publisher
from telecoder.recorder import (
    AttemptControl,
    EventRecorder,
    Quota,
    StopReason,
)
from telecoder.remembering import Remembering
from telecoder.review import ReviewStage
from telecoder.revisions import AgentWork
from telecoder.settings import Settings
from telecoder.setupcache import SetupCache
from telecoder.steps import StepRunner
from telecoder.store import Outcome, Store
from telecoder.verify import (
    Verifier,
)
from telecoder.workspace import Workspace, Worktree

log = logging.getLogger(__name__)

T = TypeVar("T")


class Pipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        workspace: Workspace,
        engines: Callable[[str], Engine],
        runtime: Runtime,
        forges: Mapping[str, Forge],
        masker: Masker | None = None,
        gateway: Gateway | None = None,
        one_shot: bool = False,  # this process runs one session and exits (``remembering``)
    ) -> None:
        self.settings = settings
        self.gateway = gateway  # None: agents get the operator's keys, cost is what CLIs report
        # Every secret TeleCoder holds, masked in events, raw logs, results and errors.
        self.masker = masker if masker is not None else Masker.from_settings(settings)
        self.quota = Quota(max_events=settings.max_events, max_bytes=settings.max_event_bytes)
        self.store = store
        self.workspace = workspace
        self.engines = engines
        self.runtime = runtime
        self.forges = forges
        self.verifier = Verifier(
            runtime=runtime, workspace=workspace, grace=settings.kill_grace_seconds
        )
        self.runner = AgentRunner(settings=settings, runtime=runtime, gateway=gateway)
        self.agent_work = AgentWork(
            store=store,
            workspace=workspace,
            verifier=self.verifier,
            runner=self.runner,
            gateway=gateway,
            cache=SetupCache(settings.setup_cache_dir, settings.cache_max),
            runtime_name=settings.runtime,
        )
        self.publisher = Publisher(store=store, workspace=workspace)
        self.review = ReviewStage(
            homes=settings.engine_homes,
            workspace=workspace,
            runner=self.runner,
            agent_work=self.agent_work,
            engines=engines,
            council=lambda engine: reviewers.council(settings, engine),
        )
        self.steps = StepRunner(
            agent_work=self.agent_work, workspace=workspace, publisher=self.publisher
        )
        self.preparer = Preparer(
            settings=settings,
            store=store,
            workspace=workspace,
            engines=engines,
            runtime=runtime,
            forges=forges,
            gateway=gateway,
        )
        self.concluder = Concluder(
            settings=settings,
            store=store,
            workspace=workspace,
            publisher=self.publisher,
            forge=self.preparer.forge,
        )
        self.cleaner = Cleaner(settings=settings, store=store, workspace=workspace)
        self.remembering = Remembering(
            settings=settings, store=store, workspace=workspace, one_shot=one_shot
        )
        self._deadlines: dict[str, Deadline] = {}  # of the attempts running now, by session

    async def run(self, session: Session, lease: Lease, control: AttemptControl) -> Session | None:
        """Run one attempt; the session as it ended, or None if this worker let it go."""
        self._deadlines[session.id] = deadline = Deadline(control, self.time_limit(session))
        recorder = EventRecorder(self.store.events, lease, masker=self.masker, quota=self.quota)
        recorder.start(control)
        worktree: list[Worktree] = []
        final: Session | None = None
        try:
            outcome = await self._outcome(session, lease, recorder, control, worktree)
            outcome = masked(outcome, recorder.masker)
            if outcome is not None:
                await budgeting.alert(self.store, self.settings, session, recorder)
            last = await recorder.drain()
            if control.reason == StopReason.LEASE_LOST:
                return None  # the session is someone else's now: write nothing
            if outcome is None:  # stopped half-way by a shutdown: hand it back
                await self._persist(
                    lambda: self.store.queue.release(lease, "the worker shut down", last)
                )
                return None
            # Work that completed is recorded, even if a shutdown began meanwhile.
            done = outcome
            final = await self._persist(lambda: self.store.queue.finish(lease, done, last))
            await self.remembering.after(session, final, worktree, recorder.masker)
            return await budgeting.requeue_if_raised(self.store, final)  # (final: it waited)
        except LeaseLost:
            log.warning("session %s: lease lost, leaving it to its new owner", session.id)
            return None
        finally:
            deadline.cancel()
            self._deadlines.pop(session.id, None)
            await recorder.cancel()
            # A chat keeps its worktree and agent state until it ends; a task blocked on its
            # budget, until it resumes or ends (handed back half-way, too: the next attempt
            # resumes it again).
            over = final is not None and final.status.terminal
            waits = final is not None and final.status == SessionStatus.BLOCKED
            resumed = bool(worktree) and worktree[0].path.name != f"{session.id}-{lease.attempt}"
            waits = waits or (final is None and resumed)
            # A task resumed after a question keeps its worktree for a retry, like a chat.
            ended = over if session.mode == Mode.CHAT or resumed else not waits
            if ended:
                await self.cleaner.clean_up(session, worktree)

    def time_limit(self, session: Session) -> float:
        deadline = self._deadlines.get(session.id)
        if deadline is not None:
            return deadline.seconds
        return session.timeout_seconds or self.settings.timeout_seconds

    async def _persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Write the end of an attempt, trying again while the database is briefly away.

        Gives up after a lease's length: by then the session is recovered by another worker
        (and the fenced write would be refused anyway).
        """
        deadline = time.monotonic() + self.settings.lease_seconds
        delay = 0.1
        while True:
            try:
                return await write()
            except StoreUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("the database is unavailable; trying again in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _outcome(
        self,
        session: Session,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        worktree: list[Worktree],
    ) -> Outcome | None:
        """How the attempt ended; None when it was stopped for this worker's sake (shutdown,
        lost lease) and is not this worker's to finish."""
        ticket = await self.preparer.ticket(session, lease, recorder, control)
        try:
            try:
                return await self._attempt(session, lease, recorder, control, worktree, ticket)
            except Stopped as stopped:
                limit = self.time_limit(session)
                if stopped.reason not in (StopReason.TIMEOUT, StopReason.BUDGET):
                    return stopped_outcome(stopped.reason, limit, self.settings.worktree_max_bytes)
                stop = await budgeting.stop_on_limit(
                    self.store, lease, stopped.reason, limit, ticket
                )
                return await self.concluder.ended_early(session, lease, recorder, worktree, stop)
        except BadInput as e:
            return failed(recorder, FailureKind.BAD_INPUT, e.message)
        except WorkspaceError as e:
            return failed(recorder, FailureKind.WORKSPACE_ERROR, e.message)
        except SandboxUnavailable as e:
            return failed(recorder, FailureKind.SANDBOX_UNAVAILABLE, e.message)
        except ForgeError as e:
            # A forge that refused for good (bad token, no such repository) is not retried.
            outcome = failed(recorder, FailureKind.PUBLISH_ERROR, e.message)
            return dataclasses.replace(outcome, retryable=None if e.transient else False)
        except LeaseLost:
            raise
        except Exception as e:
            log.exception("session %s: attempt failed unexpectedly", session.id)
            return failed(recorder, FailureKind.INTERNAL, f"{type(e).__name__}: {e}")
        finally:
            if ticket is not None and self.gateway is not None:
                await self.gateway.revoke(ticket)  # its usage is recorded before the end

    async def _attempt(
        self,
        session: Session,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        worktree: list[Worktree],
        ticket: Ticket | None = None,
    ) -> Outcome:
        with tracing.span("prepare"):
            source = await self.workspace.resolve(session.repo)
            # A checkout's remote may carry a credential: git uses it, nothing shows it.
            recorder.masker = self.masker.adding(url_credentials(source.remote_url))
            forge = self.preparer.forge(session, source.remote_url)
            await forge.ready(source.remote_url)  # e.g. a GitHub App's installation token
            git_env = forge.git_env(source.remote_url)
            recorder.masker = recorder.masker.adding(forge_secrets(forge, source.remote_url))
            turn = await self.preparer.turn(session)
            wt = await self.preparer.worktree(session, lease, source, turn, git_env, recorder)
            worktree.append(wt)
        await self.store.queue.record(
            lease,
            workspace_path=str(wt.path),
            base_sha=wt.base_sha,
            branch=wt.branch,
            engine_session_id=turn.resume_id,
        )
        recorder.progress("workspace_ready", base=wt.base, base_sha=wt.base_sha, path=str(wt.path))
        check(control)

        # The repository's settings as its base commit has them: the agent cannot change them.
        config = repoconfig.from_bytes(
            await self.workspace.read_base(wt, repoconfig.FILENAME, repoconfig.MAX_BYTES)
        )
        if session.read_only:  # an answer that only reads: no setup, checks or follow-ups
            config = readonly.narrowed(config)
        if (rules := config.follow_ups(self.settings.chain_max_depth)) is not None:
            await self.store.queue.record(lease, follow_ups=json.dumps(rules))  # store.chains
        engine_name, model = await self.preparer.choose_engine(session, lease, config)
        await self._limits(session, lease, config, ticket)
        if ticket is not None:
            ticket.engine, ticket.model = engine_name, model
        engine = self.engines(engine_name)
        panel = self.review.panel(config, engine_name)  # an unknown reviewer: bad input, now
        prompt = turn.prompt
        # A session someone watches: its agent is told how to ask, in its first turn (not a
        # shell command's: its prompt is the command).
        instructed = getattr(engine, "instructed", True)
        if turn.previous is None and instructed and questions.may_ask(session):
            prompt += "\n\n" + questions.HINT
        if turn.previous is None and instructed and ticket is not None:  # the inbox tool
            prompt += await agentinbox.told(self.store, session)
        if turn.previous is None and instructed:  # what earlier sessions here taught
            prompt += await self.remembering.recalled(session, turn.prompt, config, recorder)
        task = EngineTask(
            prompt=prompt,
            workdir=wt.path,
            home=self.settings.engine_homes / session.id,
            model=model,
            resume_id=turn.resume_id,
            env=self.runner.passthrough_env(ticket),
            tier=session.tier,
        )
        confiner = await self.preparer.confiner(session, wt, task, config, recorder)
        if config.setup and turn.previous is None:  # a chat's later turns reuse its worktree
            with tracing.span("setup"):
                failed = await self.agent_work.setup(
                    config, wt, task.home, recorder, control, confiner
                )
            if failed is not None:
                return Outcome(
                    status=SessionStatus.FAILED, failure_kind=FailureKind.SETUP_FAILED, error=failed
                )
        with tracing.span("agent", engine=engine_name, model=model):
            if session.steps:  # multi-step: one turn per step, a checkpoint pushed after each
                args = (
                    session,
                    engine,
                    task,
                    config,
                    wt,
                    lease,
                    recorder,
                    control,
                    forge,
                    confiner,
                )
                work = await self.steps.work(*args)
            else:
                work = await self.agent_work.work(
                    engine, task, config, wt, lease, recorder, control, confiner
                )
        with tracing.span("review"):
            reviewed = await self.review.work(
                panel, work, engine, task, config, wt, lease, recorder, control, confiner
            )
        return await self.concluder.conclude(
            session, lease, recorder, control, wt, forge, config, turn, reviewed, ticket
        )

    async def _limits(
        self,
        session: Session,
        lease: Lease,
        config: repoconfig.RepoConfig,
        ticket: Ticket | None = None,
    ) -> None:
        """The budget and time limit in force, now that the repository's are known."""
        self._deadlines[session.id].reset(budgeting.time_limit_of(session, config, self.settings))
        budget = budgeting.budget_of(session, config, self.settings)
        if budget != session.budget_usd:
            await self.store.queue.record_budget(lease, budget)
        if ticket is not None and budget != ticket.budget_usd:
            ticket.set_budget(budget)

    async def chats_ended(self, session_ids: list[str]) -> None:
        for session_id in session_ids:  # no attempt ends an idle chat: remember it here
            await self.remembering.chat_ended(session_id, self.masker)

    async def sweep(self) -> list[str]:
        """Remove what ended sessions left on this host (``cleanup.Cleaner.sweep``)."""
        return await self.cleaner.sweep()
