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
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from telecoder import agentinbox, budgeting, questions, readonly, repoconfig, reviewers
from telecoder import outcome as outcomes
from telecoder.agentrun import AgentRunner
from telecoder.budgeting import Deadline, Turn
from telecoder.cleanup import Cleaner
from telecoder.confine import Confiner
from telecoder.domain import (
    EngineSource,
    EventKind,
    FailureKind,
    Lease,
    Mode,
    Result,
    ResultType,
    Session,
    SessionStatus,
)
from telecoder.endings import (
    Stopped,
    check,
    choose_forge,
    commit_message,
    failed,
    forge_secrets,
    masked,
    rate_limited,
    stopped_outcome,
    usage_fields,
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
from telecoder.protocols import (
    Endpoint,
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
    clip,
)
from telecoder.remembering import Remembering
from telecoder.review import ReviewStage
from telecoder.revisions import AgentWork
from telecoder.settings import Settings
from telecoder.setupcache import SetupCache
from telecoder.steps import StepRunner, partial_result
from telecoder.store import Outcome, Store
from telecoder.verify import (
    Verifier,
)
from telecoder.workspace import RepoSource, Workspace, Worktree

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
        ticket = await self._ticket(session, lease, recorder, control)
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
                return await self._ended_early(session, lease, recorder, worktree, stop)
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

    async def _ticket(
        self, session: Session, lease: Lease, recorder: EventRecorder, control: AttemptControl
    ) -> Ticket | None:
        """The attempt's key to the models at the gateway; None when the gateway is off."""
        if self.gateway is None:
            return None

        def tell(kind: str, data: dict[str, Any]) -> None:
            recorder.add(EventKind(kind), data)

        watch = budgeting.BudgetWatch(self.store, session.id, control)
        ticket = Ticket.of_session(session, lease.attempt, on_budget=watch, on_event=tell)
        watch.ticket = ticket
        return await self.gateway.issue(ticket)

    async def _attempt(
        self,
        session: Session,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        worktree: list[Worktree],
        ticket: Ticket | None = None,
    ) -> Outcome:
        source = await self.workspace.resolve(session.repo)
        # A checkout's remote may carry a credential: git uses it, nothing shows it.
        recorder.masker = self.masker.adding(url_credentials(source.remote_url))
        forge = self._forge(session, source.remote_url)
        await forge.ready(source.remote_url)  # e.g. a GitHub App's installation token
        git_env = forge.git_env(source.remote_url)
        recorder.masker = recorder.masker.adding(forge_secrets(forge, source.remote_url))
        turn = await self._turn(session)
        wt = await self._worktree(session, lease, source, turn, git_env, recorder)
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
        engine_name, model = await self._choose_engine(session, lease, config)
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
        confiner = await self._confiner(session, wt, task, config, recorder)
        if config.setup and turn.previous is None:  # a chat's later turns reuse its worktree
            failed = await self.agent_work.setup(config, wt, task.home, recorder, control, confiner)
            if failed is not None:
                return Outcome(
                    status=SessionStatus.FAILED, failure_kind=FailureKind.SETUP_FAILED, error=failed
                )
        if session.steps:  # a multi-step task: one turn per step, a checkpoint pushed after each
            args = (session, engine, task, config, wt, lease, recorder, control, forge, confiner)
            work = await self.steps.work(*args)
        else:
            work = await self.agent_work.work(
                engine, task, config, wt, lease, recorder, control, confiner
            )
        reviewed = await self.review.work(
            panel, work, engine, task, config, wt, lease, recorder, control, confiner
        )
        work = reviewed.work
        if work.failure is not None:
            kind, error = work.failure
            if ticket is not None and ticket.rate_limited:
                return rate_limited(ticket, error, work.usage)
            asks = questions.may_ask(session) and not session.steps
            if kind == FailureKind.AGENT_LIMIT and not session.steps:
                # A guardrail stopped the builtin agent: what it wrote is kept, as a draft.
                stop = budgeting.Stop(kind, error, blocks=False)
                ended = await self._ended_early(session, lease, recorder, worktree, stop)
                return replace(ended, **usage_fields(work.usage))
            blocked = kind in (FailureKind.VERIFY_FAILED, FailureKind.REVIEW_BLOCKED)
            if blocked and work.resumable and asks:
                # Someone will see it ask: wait for their hint rather than fail.
                return Outcome(
                    status=SessionStatus.BLOCKED,
                    failure_kind=kind,
                    error=error,
                    question=questions.verify_question(error),
                    **usage_fields(work.usage),
                )
            return Outcome(
                status=SessionStatus.FAILED,
                failure_kind=kind,
                error=error,
                result=partial_result(wt, work),  # a multi-step task's earlier steps
                pushed_sha=work.checkpoint,
                **usage_fields(work.usage),
            )

        if session.read_only:  # its answer is the result: nothing is committed or pushed
            return readonly.answered(work.text, work.usage, recorder)
        recorder.progress("committing")
        await self.workspace.sanitize(wt)
        message = commit_message(session, turn.subject)
        sha = await self.workspace.commit(wt, message, date=session.created_at) or work.checkpoint
        text = clip(work.text)
        if sha is None:
            answer = Result(type=ResultType.TEXT, text=text)
        else:
            leaked = await self.publisher.scan(wt, config, recorder)
            if leaked is not None:
                kind = FailureKind.SECRET_DETECTED
                return Outcome(
                    status=SessionStatus.FAILED,
                    failure_kind=kind,
                    error=leaked,
                    **usage_fields(work.usage),
                )
            answer = await self.publisher.publish(
                session, lease, wt, forge, sha, recorder, control, text, config=config,
                review=reviewed.section,
            )  # fmt: skip
        heuristic = questions.may_ask(session)
        question = questions.asked(work.text, changed=sha is not None, heuristic=heuristic)
        if question is None and ticket is not None:  # asked through the inbox, unanswered
            question = await agentinbox.open_question(self.store, ticket.asked)
        waits = session.mode == Mode.CHAT or question is not None
        status = SessionStatus.BLOCKED if waits else SessionStatus.SUCCEEDED
        found = outcomes.summarize(status=status, result=answer.to_dict(), checks=recorder.checks)
        answer = replace(answer, outcome=found, review=reviewed.review)
        recorder.add(EventKind.RESULT, answer.to_dict())
        # The pushed sha is recorded with the completion, in one transaction.
        return Outcome(
            status=status,
            result=answer,
            pushed_sha=answer.commit,
            question=question,
            **usage_fields(work.usage),
        )

    async def _turn(self, session: Session) -> Turn:
        """The task's prompt; for a chat, the messages its next turn answers; for a task that
        asked a question, its answer; after a raise of the budget it stopped on, a word to go
        on."""
        if (resumed := await budgeting.resumed_turn(self.store, session)) is not None:
            return resumed
        talk = await self.store.sessions.conversation(session.id)
        if session.mode != Mode.CHAT:
            if talk.previous is not None and talk.texts:  # it asked, and was answered
                return Turn("\n\n".join(talk.texts), talk.previous)
            return Turn(session.prompt)
        if talk.previous is None:
            return Turn("\n\n".join([session.prompt, *talk.texts]))
        if not talk.texts:
            raise BadInput("the chat has no new message to answer")
        text = "\n\n".join(talk.texts)
        return Turn(text, talk.previous, subject=text)

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

    async def _ended_early(
        self,
        session: Session,
        lease: Lease,
        recorder: EventRecorder,
        worktree: list[Worktree],
        stop: budgeting.Stop,
    ) -> Outcome:
        """Stopped by its time or budget limit: wait for a raise with the worktree and the
        agent's session kept, or push what the agent did as a partial result (a draft)."""
        if stop.blocks or not worktree:
            return stop.outcome()
        wt = worktree[0]
        recorder.progress("committing", partial=stop.kind.value)
        await self.workspace.sanitize(wt)
        message = commit_message(session, partial=stop.kind.value)
        sha = await self.workspace.commit(wt, message, date=session.created_at)
        if sha is None:
            return stop.outcome()  # nothing changed: nothing to keep
        config = repoconfig.from_bytes(
            await self.workspace.read_base(wt, repoconfig.FILENAME, repoconfig.MAX_BYTES)
        )
        if (leaked := await self.publisher.scan(wt, config, recorder)) is not None:
            kind = FailureKind.SECRET_DETECTED
            return Outcome(status=SessionStatus.FAILED, failure_kind=kind, error=leaked)
        forge = self._forge(session, wt.remote_url)
        answer = await self.publisher.publish(
            session,
            lease,
            wt,
            forge,
            sha,
            recorder,
            AttemptControl(),
            partial=stop.kind,
            config=config,
        )
        recorder.add(EventKind.RESULT, answer.to_dict())
        error = f"{stop.error}; what the agent did is pushed as a partial result (a draft)"
        return replace(stop.outcome(), error=error, result=answer, pushed_sha=answer.commit)

    async def _worktree(
        self,
        session: Session,
        lease: Lease,
        source: RepoSource,
        turn: Turn,
        git_env: Mapping[str, str],
        recorder: EventRecorder,
    ) -> Worktree:
        previous = turn.previous
        if previous is None:
            recorder.progress("preparing_workspace")
            return await self.workspace.prepare(
                f"{session.id}-{lease.attempt}",
                source,
                branch=session.branch,
                base=session.base_ref,
                env=git_env,
            )
        wt = None
        if previous.workspace_path and previous.base_sha:
            wt = await self.workspace.reopen(
                Path(previous.workspace_path),
                source,
                branch=session.branch,
                base=session.base_ref,
                base_sha=previous.base_sha,
            )
        if wt is None:
            raise BadInput(
                f"the {session.mode.value}'s worktree {previous.workspace_path} is gone (removed, "
                "or kept on another host): the conversation cannot continue"
            )
        recorder.progress("reopening_workspace", turn_of_attempt=previous.number)
        return wt

    async def _choose_engine(
        self, session: Session, lease: Lease, config: repoconfig.RepoConfig
    ) -> tuple[str, str | None]:
        """The engine and model to run: ``--engine`` beats the repository's ``.telecoder.yml``,
        which beats ``TELECODER_ENGINE``; the repository's model goes with its engine."""
        engine = session.engine
        if session.engine_source != EngineSource.REQUEST and config.engine:
            engine = config.engine
            if (engine, EngineSource.REPO) != (session.engine, session.engine_source):
                self.engines(engine)  # an unknown engine is the repository's bad input
                await self.store.queue.choose_engine(lease, engine, EngineSource.REPO)
        model = session.model
        if model is None and config.model and config.engine in (None, engine):
            model = config.model
        return engine, model

    async def _confiner(
        self,
        session: Session,
        wt: Worktree,
        task: EngineTask,
        config: repoconfig.RepoConfig,
        recorder: EventRecorder,
    ) -> Confiner | None:
        """The confinements of this attempt's processes; None when the runtime has no sandbox."""
        if not self.runtime.confined:
            return None
        git_dir = await self.workspace.sandbox_git_dir(wt, task.home / "git" / wt.path.name)

        def denied(role: str, endpoint: Endpoint, reason: str) -> None:
            data = {"host": endpoint.host, "port": endpoint.port, "by": role, "reason": reason}
            recorder.add(EventKind.NETWORK_DENIED, data)

        return Confiner(
            self.settings,
            label=session.id,
            worktree=wt,
            home=task.home,
            git_dir=git_dir,
            config=config,
            model_env=task.env,
            on_denied=denied,
            read_only=session.read_only,
        )

    def _forge(self, session: Session, remote_url: str) -> Forge:
        return choose_forge(self.forges, session.forge or self.settings.forge, remote_url)

    async def chats_ended(self, session_ids: list[str]) -> None:
        for session_id in session_ids:  # no attempt ends an idle chat: remember it here
            await self.remembering.chat_ended(session_id, self.masker)

    async def sweep(self) -> list[str]:
        """Remove what ended sessions left on this host (``cleanup.Cleaner.sweep``)."""
        return await self.cleaner.sweep()
