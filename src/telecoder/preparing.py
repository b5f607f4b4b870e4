"""What an attempt needs before its agent runs (the pipeline's prepare step).

- ``ticket``: the attempt's key to the models at the gateway (None when the gateway is off).
- ``turn``: what this turn answers: the task's prompt, a chat's new messages, the answer to a
  question the task asked, or a word to go on after a raise of the budget it stopped on.
- ``worktree``: a fresh worktree for a first turn; the kept one, reopened, for a later turn.
- ``choose_engine``: the engine and model to run (request, then repository, then settings).
- ``confiner``: the confinements of the attempt's processes, when the runtime has a sandbox.
- ``forge``: where the session's result goes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telecoder import budgeting, repoconfig
from telecoder.budgeting import Turn
from telecoder.confine import Confiner
from telecoder.domain import EngineSource, EventKind, Lease, Mode, Session
from telecoder.endings import choose_forge
from telecoder.errors import BadInput
from telecoder.gateway import Gateway, Ticket
from telecoder.protocols import Endpoint, Engine, EngineTask, Forge, Runtime
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.workspace import RepoSource, Workspace, Worktree


@dataclass(frozen=True, slots=True, kw_only=True)
class Preparer:
    settings: Settings
    store: Store
    workspace: Workspace
    engines: Callable[[str], Engine]
    runtime: Runtime
    forges: Mapping[str, Forge]
    gateway: Gateway | None = None

    async def ticket(
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

    async def turn(self, session: Session) -> Turn:
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

    async def worktree(
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

    async def choose_engine(
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

    async def confiner(
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

    def forge(self, session: Session, remote_url: str) -> Forge:
        return choose_forge(self.forges, session.forge or self.settings.forge, remote_url)
