"""How an attempt's work becomes its outcome (the pipeline's last steps, before ``finish``).

- ``conclude``: the work failed: a builtin agent stopped by a guardrail keeps its work as a
  draft; checks or a review that keep failing in a watched session block with a question;
  otherwise the session fails (a verify_failed session's work pushed when the repository or
  the settings ask for it). A read-only session's answer is its result. Otherwise: commit →
  secret scan → push → open/update PR (no change: the engine's answer), then whether the
  session waits (a chat, or a question asked) or succeeded.
- ``ended_early``: stopped by its time or budget limit: wait for a raise, or push what the
  agent did as a partial result (a draft).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from telecoder import agentinbox, budgeting, questions, readonly, repoconfig, tracing
from telecoder import outcome as outcomes
from telecoder.budgeting import Turn
from telecoder.domain import (
    EventKind,
    FailureKind,
    Lease,
    Mode,
    Result,
    ResultType,
    Session,
    SessionStatus,
)
from telecoder.endings import commit_message, rate_limited, usage_fields
from telecoder.gateway import Ticket
from telecoder.protocols import Forge
from telecoder.publishing import Publisher
from telecoder.recorder import AttemptControl, EventRecorder, clip
from telecoder.review import Reviewed
from telecoder.settings import Settings
from telecoder.steps import partial_result
from telecoder.store import Outcome, Store
from telecoder.workspace import Workspace, Worktree


@dataclass(frozen=True, slots=True, kw_only=True)
class Concluder:
    settings: Settings
    store: Store
    workspace: Workspace
    publisher: Publisher
    forge: Callable[[Session, str], Forge]  # where a session's result goes

    async def conclude(
        self,
        session: Session,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        wt: Worktree,
        forge: Forge,
        config: repoconfig.RepoConfig,
        turn: Turn,
        reviewed: Reviewed,
        ticket: Ticket | None,
    ) -> Outcome:
        """The outcome of the work, checked and reviewed: failed, a read-only answer, or
        committed, scanned, published and answered."""
        work = reviewed.work
        if work.failure is not None:
            kind, error = work.failure
            if ticket is not None and ticket.rate_limited:
                return rate_limited(ticket, error, work.usage)
            asks = questions.may_ask(session) and not session.steps
            if kind == FailureKind.AGENT_LIMIT and not session.steps:
                # A guardrail stopped the builtin agent: what it wrote is kept, as a draft.
                stop = budgeting.Stop(kind, error, blocks=False)
                ended = await self.ended_early(session, lease, recorder, [wt], stop)
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
            result = partial_result(wt, work)  # a multi-step task's earlier steps
            if kind == FailureKind.VERIFY_FAILED and self._push_failed(config):
                result = await self.publisher.push_failed(
                    session, lease, wt, forge, recorder, control, config, result
                )
            return Outcome(
                status=SessionStatus.FAILED,
                failure_kind=kind,
                error=error,
                result=result,
                pushed_sha=work.checkpoint,
                **usage_fields(work.usage),
            )

        if session.read_only:  # its answer is the result: nothing is committed or pushed
            return readonly.answered(work.text, work.usage, recorder)
        with tracing.span("publish"):
            recorder.progress("committing")
            await self.workspace.sanitize(wt)
            message = commit_message(session, turn.subject)
            committed = await self.workspace.commit(wt, message, date=session.created_at)
            sha = committed or work.checkpoint
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

    async def ended_early(
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
        forge = self.forge(session, wt.remote_url)
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

    def _push_failed(self, config: repoconfig.RepoConfig) -> bool:
        """Whether a verify_failed session's work is pushed: the repository's word first."""
        if config.push_failed is not None:
            return config.push_failed
        return self.settings.push_failed
