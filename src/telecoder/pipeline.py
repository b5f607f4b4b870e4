"""One attempt of a session, top to bottom (ARCHITECTURE §3).

    prepare workspace (a chat's later turn: reopen its kept worktree) → read .telecoder.yml
    → run engine → verify → on failure resume the same agent session with the report
      (≤ max_revisions) → (events masked, capped and recorded in batches all along)
    → commit → secret scan → push → open/update PR  |  no change → the engine's answer
    → finish the attempt (a chat: ``blocked``, waiting for a message) → clean up

Every step can be redone by a later attempt without a second commit, push or PR: the worktree
is made afresh, the commit is deterministic, the push is skipped when the remote already has it,
and the forge finds the PR it opened before. ``AttemptControl`` carries why an attempt must stop
early (cancel, timeout, stall, shutdown, lost lease); whoever notices sets it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from telecoder import budgeting, disk, rawlog, repoconfig, secretscan
from telecoder import outcome as outcomes
from telecoder.budgeting import Deadline, Turn
from telecoder.channels import github as github_channel
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
from telecoder.endings import choose_forge, commit_message, failed, masked, stopped_outcome
from telecoder.errors import (
    BadInput,
    ForgeError,
    LeaseLost,
    SandboxUnavailable,
    SessionNotFound,
    StoreUnavailable,
    WorkspaceError,
)
from telecoder.gateway import Gateway, Ticket, vendor_replaced
from telecoder.masking import Masker, url_credentials
from telecoder.protocols import (
    Confinement,
    Endpoint,
    Engine,
    EngineOutcome,
    EngineTask,
    Forge,
    Publication,
    Published,
    Runtime,
    Usage,
)
from telecoder.recorder import (
    AttemptControl,
    EventRecorder,
    Quota,
    StopReason,
    clip,
    decode,
)
from telecoder.settings import Settings
from telecoder.store import Outcome, Store
from telecoder.verify import (
    CheckReport,
    Verifier,
    failure_summary,
    revision_prompt,
    setup_failure,
)
from telecoder.workspace import RepoSource, Workspace, Worktree

log = logging.getLogger(__name__)

WORKTREE_CHECK_SECONDS = 5.0  # how often a running agent's worktree is measured

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Stopped(Exception):
    reason: StopReason


@dataclass(frozen=True, slots=True)
class _Work:
    """What the agent did, revisions included."""

    text: str | None
    usage: Usage
    failure: tuple[FailureKind, str] | None = None


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
            ended = over if session.mode == Mode.CHAT else not waits
            if ended:
                await self._clean_up(session, worktree)

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
            except _Stopped as stopped:
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
        if (ready := getattr(forge, "ready", None)) is not None:
            await ready(source.remote_url)  # a GitHub App's installation token, at hand
        git_env = forge.git_env(source.remote_url)
        recorder.masker = recorder.masker.adding(
            getattr(forge, "secrets", _none)(source.remote_url)
        )
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
        _check(control)

        # The repository's settings as its base commit has them: the agent cannot change them.
        config = repoconfig.from_bytes(
            await self.workspace.read_base(wt, repoconfig.FILENAME, repoconfig.MAX_BYTES)
        )
        engine_name, model = await self._choose_engine(session, lease, config)
        await self._limits(session, lease, config, ticket)
        if ticket is not None:
            ticket.engine, ticket.model = engine_name, model
        task = EngineTask(
            prompt=turn.prompt,
            workdir=wt.path,
            home=self.settings.engine_homes / session.id,
            model=model,
            resume_id=turn.resume_id,
            env=self._passthrough_env(ticket),
        )
        engine = self.engines(engine_name)
        confiner = await self._confiner(session, wt, task, config, recorder)
        if config.setup and turn.previous is None:  # a chat's later turns reuse its worktree
            failed = await self._setup(config, wt, task.home, recorder, control, confiner)
            if failed is not None:
                return Outcome(
                    status=SessionStatus.FAILED, failure_kind=FailureKind.SETUP_FAILED, error=failed
                )
        work = await self._work(engine, task, config, wt, lease, recorder, control, confiner)
        if work.failure is not None:
            kind, error = work.failure
            if ticket is not None and ticket.rate_limited:
                return _rate_limited(ticket, error, work.usage)
            return Outcome(
                status=SessionStatus.FAILED, failure_kind=kind, error=error, **_usage(work.usage)
            )

        recorder.progress("committing")
        await self.workspace.sanitize(wt)
        message = commit_message(session, turn.subject)
        sha = await self.workspace.commit(wt, message, date=session.created_at)
        text = clip(work.text)
        if sha is None:
            answer = Result(type=ResultType.TEXT, text=text)
        else:
            leaked = await self._scan(wt, config, recorder)
            if leaked is not None:
                kind = FailureKind.SECRET_DETECTED
                return Outcome(
                    status=SessionStatus.FAILED,
                    failure_kind=kind,
                    error=leaked,
                    **_usage(work.usage),
                )
            answer = await self._publish(
                session, lease, wt, forge, git_env, sha, recorder, control, text
            )
        status = SessionStatus.BLOCKED if session.mode == Mode.CHAT else SessionStatus.SUCCEEDED
        found = outcomes.summarize(status=status, result=answer.to_dict(), checks=recorder.checks)
        answer = replace(answer, outcome=found)
        recorder.add(EventKind.RESULT, answer.to_dict())
        # The pushed sha is recorded with the completion, in one transaction.
        return Outcome(status=status, result=answer, pushed_sha=answer.commit, **_usage(work.usage))

    async def _turn(self, session: Session) -> Turn:
        """The task's prompt; for a chat, the messages its next turn answers; after a raise of
        the budget it stopped on, a word to go on."""
        if (resumed := await budgeting.resumed_turn(self.store, session)) is not None:
            return resumed
        if session.mode != Mode.CHAT:
            return Turn(session.prompt)
        talk = await self.store.sessions.conversation(session.id)
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
        if (leaked := await self._scan(wt, config, recorder)) is not None:
            kind = FailureKind.SECRET_DETECTED
            return Outcome(status=SessionStatus.FAILED, failure_kind=kind, error=leaked)
        forge = self._forge(session, wt.remote_url)
        git_env = forge.git_env(wt.remote_url)
        answer = await self._publish(
            session, lease, wt, forge, git_env, sha, recorder, AttemptControl(), partial=stop.kind
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
        )

    async def _work(
        self,
        engine: Engine,
        task: EngineTask,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> _Work:
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
            raw_log = self._raw_log(lease, revision, recorder.masker)
            try:
                result = await self._run_engine(
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
                usage = _add(usage, result.usage)
            if result.session_id:  # before a stop is acted on: a budget's may resume it
                await self.store.queue.record(lease, engine_session_id=result.session_id)
            _check(control)
            if not result.ok:
                failure = result.failure_kind or FailureKind.ENGINE_ERROR
                return _Work(result.text, usage, (failure, result.error or f"{engine.name} failed"))
            if not config.has_checks:
                return _Work(result.text, usage)
            failed = await self._verify(
                config, wt, task.home, revision, recorder, control, confiner
            )
            if not failed:
                recorder.progress("verified", revision=revision)
                return _Work(result.text, usage)
            resumable = result.session_id is not None
            if revision >= config.max_revisions or not resumable:
                summary = failure_summary(failed, revision, resumable=resumable)
                kind = FailureKind.VERIFY_FAILED
                recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": summary})
                return _Work(result.text, usage, (kind, summary))
            revision += 1
            task = replace(task, prompt=revision_prompt(failed), resume_id=result.session_id)

    async def _setup(
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
            env=self._verify_env(home),
            stopped=control.wait,
            report=report,
            confinement=confiner.for_role("setup") if confiner else None,
        )
        _check(control)
        if failed is None:
            return None
        message = setup_failure(failed)
        kind = FailureKind.SETUP_FAILED
        recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": message})
        return message

    async def _verify(
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
            env=self._verify_env(home),
            stopped=control.wait,
            report=report,
            confinement=confiner.for_role("verify") if confiner else None,
        )
        _check(control)
        return [r for r in reports if not r.ok]

    def _verify_env(self, home: Path) -> dict[str, str]:
        """The allow-listed environment the agent gets too, without any model key."""
        (home / "verify").mkdir(parents=True, exist_ok=True)
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return {
            **self._allowed_env(),
            "HOME": str(home / "verify"),
            "TMPDIR": str(home / "tmp"),
        }

    async def _publish(
        self,
        session: Session,
        lease: Lease,
        wt: Worktree,
        forge: Forge,
        git_env: Mapping[str, str],
        sha: str,
        recorder: EventRecorder,
        control: AttemptControl,
        text: str | None = None,
        partial: FailureKind | None = None,
    ) -> Result:
        stats = await self.workspace.diff_stats(wt)
        await self._confirm_lease(lease, control)
        recorder.progress("pushing", branch=wt.branch, commit=sha)
        pushed = await self.workspace.push(wt, sha, env=git_env)
        recorder.progress("pushed" if pushed else "already_pushed", branch=wt.branch, commit=sha)
        why = partial.value if partial else None
        title, _, body = commit_message(session, partial=why).partition("\n")
        if (pull := github_channel.on_pull_request(session.origin)) is not None:
            published = Published(number=pull)  # its own branch: the pull request is there
        else:
            published = await forge.publish(
                Publication(
                    session_id=session.id,
                    remote_url=wt.remote_url,
                    branch=wt.branch,
                    base=wt.base,
                    title=title,
                    body=github_channel.pull_request_body(
                        session.origin, body.strip() or session.prompt
                    ),
                    draft=partial is not None,
                )
            )
        if published.url:
            recorder.progress("pull_request", url=published.url, number=published.number)
        return Result(
            type=ResultType.BRANCH,
            branch=wt.branch,
            commit=sha,
            pr_url=published.url,
            pr_number=published.number,
            text=text,
            diff=stats,
            partial=partial is not None,
        )

    async def _confirm_lease(self, lease: Lease, control: AttemptControl) -> None:
        """Renew the lease right before an effect outside the database (push, pull request).

        A worker that was paused or cut off past its lease learns it here, and does nothing;
        a cancel requested meanwhile stops the attempt before it publishes.
        """
        _check(control)
        beat = await self.store.queue.heartbeat(lease)  # LeaseLost if it is gone
        if beat.cancel_requested:
            control.stop(StopReason.CANCELLED)
        _check(control)

    async def _scan(
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

    def _raw_log(self, lease: Lease, run: int, masker: Masker) -> rawlog.RawLog | None:
        if not self.settings.raw_log_days:
            return None
        file = rawlog.path(self.settings.raw_logs, lease.session_id, lease.attempt)
        return rawlog.RawLog(file, run=run, masker=masker)

    async def _run_engine(
        self,
        engine: Engine,
        task: EngineTask,
        recorder: EventRecorder,
        control: AttemptControl,
        raw_log: rawlog.RawLog | None = None,
        confinement: Confinement | None = None,
    ) -> EngineOutcome:
        command = engine.command(task)
        (task.home / "tmp").mkdir(parents=True, exist_ok=True)
        for rel, content in command.files.items():
            path = task.home / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        env = {
            **self._allowed_env(task.env),
            "HOME": str(task.home),
            "TMPDIR": str(task.home / "tmp"),
            **command.env,
        }
        process = await self.runtime.spawn(
            command.argv,
            cwd=task.workdir,
            env=env,
            stdin=command.stdin,
            interactive=command.interactive,
            confinement=confinement,
        )
        parser = engine.parser(task)
        last_output = time.monotonic()

        async def pump() -> None:
            nonlocal last_output
            async for stream, raw in process.lines():
                last_output = time.monotonic()
                line = decode(raw)
                if raw_log is not None:
                    raw_log.line(stream, line)
                try:
                    feed = parser.feed(stream, line)
                except Exception as e:
                    log.exception("%s parser failed", engine.name)
                    recorder.add(EventKind.OUTPUT, {"stream": stream, "text": line})
                    recorder.add(EventKind.ERROR, {"message": f"{engine.name} parser: {e}"})
                    continue
                for event in feed.events:
                    if event.kind == EventKind.USAGE and self.gateway is not None:
                        continue  # the CLI's own figures (in the raw log): the gateway's count
                    recorder.add(event.kind, event.data)
                if feed.reply:
                    await process.send(feed.reply)
                if feed.done:
                    await process.close_stdin()
                    return

        async def watchdog() -> None:
            limit = self.settings.stall_seconds
            cap = self.settings.worktree_max_bytes
            measured = time.monotonic()
            while True:
                await asyncio.sleep(min(1.0, limit / 4))
                if time.monotonic() - last_output > limit:
                    control.stop(StopReason.STALLED)
                    return
                if cap and time.monotonic() - measured >= WORKTREE_CHECK_SECONDS:
                    measured = time.monotonic()
                    if await asyncio.to_thread(disk.size_of, task.workdir, cap) > cap:
                        control.stop(StopReason.TOO_LARGE)
                        return

        pumping = asyncio.create_task(pump())
        stopping = asyncio.create_task(control.wait())
        watching = asyncio.create_task(watchdog())
        try:
            await asyncio.wait({pumping, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if pumping.done() and control.reason is None:
                pumping.result()
                # Output ended: the engine exits by itself (or, done talking, is asked to).
                try:
                    code: int | None = await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    code = await process.stop(self.settings.kill_grace_seconds)
            else:
                code = await process.stop(self.settings.kill_grace_seconds)
        finally:
            for task_ in (pumping, stopping, watching):
                task_.cancel()
            await asyncio.gather(pumping, stopping, watching, return_exceptions=True)
        cap = self.settings.worktree_max_bytes
        if cap and await asyncio.to_thread(disk.size_of, task.workdir, cap) > cap:
            control.stop(StopReason.TOO_LARGE)
        return parser.finish(code)

    def _forge(self, session: Session, remote_url: str) -> Forge:
        return choose_forge(self.forges, session.forge or self.settings.forge, remote_url)

    def _allowed_env(self, task_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """What every process may see of the operator's environment; with the gateway on, no
        model endpoint or key of the operator's: an agent's (``task_env``) are the gateway's."""
        env = {k: os.environ[k] for k in self.settings.env_allow if k in os.environ}
        return env if self.gateway is None else vendor_replaced(env, task_env or {})

    def _passthrough_env(self, ticket: Ticket | None = None) -> dict[str, str]:
        names = (*self.settings.env_allow, *self.settings.engine_env)
        env = {k: os.environ[k] for k in names if k in os.environ}
        if ticket is not None and self.gateway is not None:
            env = self.gateway.agent_env(env, ticket)  # no real key, no real endpoint
        return {**env, **self.settings.engine_control_env()}

    async def sweep(self) -> list[str]:
        """Remove what ended sessions left on this host: the worktrees chats kept and engine
        homes (a chat cancelled or ended while it waited; an attempt whose worker crashed),
        and raw logs past their retention. Returns the ids of the sessions cleaned up."""
        root = self.settings.engine_homes
        cleaned: list[str] = []
        for home in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                session = await self.store.sessions.get(home.name)
            except SessionNotFound:
                session = None
            if session is not None and not session.status.terminal:
                continue
            await self._forget(home.name)
            cleaned.append(home.name)
        keep = self.settings.raw_log_days * 86400
        await asyncio.to_thread(rawlog.sweep, self.settings.raw_logs, keep)
        return cleaned

    async def _forget(self, session_id: str) -> None:
        """Remove the session's engine home and every worktree it kept (those kept on purpose
        for ``worktree_retention_seconds`` are ``prune``'s)."""
        kept = re.compile(rf"{re.escape(session_id)}-\d+")
        for path in sorted(self.settings.worktrees.glob(f"{session_id}-*")):
            marked = path.with_name(path.name + ".done").exists()
            if kept.fullmatch(path.name) and path.is_dir() and not marked:
                await self.workspace.remove_path(path)
        home = self.settings.engine_homes / session_id
        await asyncio.to_thread(shutil.rmtree, home, ignore_errors=True)

    async def _clean_up(self, session: Session, worktree: list[Worktree]) -> None:
        try:
            if worktree:
                if self.settings.worktree_retention_seconds > 0:
                    self.workspace.mark_finished(worktree[0])
                else:
                    await self.workspace.remove(worktree[0])
            if session.mode == Mode.CHAT:
                await self._forget(session.id)  # and the worktrees of its earlier turns
            else:
                home = self.settings.engine_homes / session.id
                await asyncio.to_thread(shutil.rmtree, home, ignore_errors=True)
        except WorkspaceError:
            log.warning("session %s: could not remove its worktree", session.id, exc_info=True)


def _check(control: AttemptControl) -> None:
    if control.reason is not None:
        raise _Stopped(control.reason)


def _add(total: Usage, more: Usage | None) -> Usage:
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


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "cost_usd": usage.cost_usd or 0.0,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }


def _rate_limited(ticket: Ticket, error: str | None, usage: Usage) -> Outcome:
    """The agent failed after the gateway gave up waiting out a rate limit: not the task's
    fault, so the session is requeued (``rate_limited``), not before the endpoint opens."""
    until = ticket.rate_limited_until
    wait = f" until {time.strftime('%H:%M:%S', time.localtime(until))}" if until else ""
    message = f"the model endpoint kept rate-limiting{wait}; requeued"
    return Outcome(
        status=SessionStatus.FAILED,
        failure_kind=FailureKind.RATE_LIMITED,
        error=f"{message} ({error})" if error else message,
        not_before=until,
        **_usage(usage),
    )


def _none(_remote_url: str) -> tuple[str, ...]:
    return ()
