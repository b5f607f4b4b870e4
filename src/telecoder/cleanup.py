"""What an attempt leaves on this host, removed: its worktree (or marked finished for
``worktree_retention_seconds``, or kept for an orch run's leader until ``orch cleanup``) and
engine home when it ends; a chat's earlier turns with it;
and, swept now and then, whatever ended sessions and crashed workers left, and old raw logs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil

from telecoder import rawlog
from telecoder.domain import Mode, RunKind, Session
from telecoder.errors import SessionNotFound, WorkspaceError
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.workspace import Workspace, Worktree

log = logging.getLogger(__name__)


class Cleaner:
    def __init__(self, *, settings: Settings, store: Store, workspace: Workspace) -> None:
        self.settings = settings
        self.store = store
        self.workspace = workspace

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
            await self.forget(home.name)
            cleaned.append(home.name)
        keep = self.settings.raw_log_days * 86400
        await asyncio.to_thread(rawlog.sweep, self.settings.raw_logs, keep)
        if (retention := self.settings.worktree_retention_seconds) > 0:
            for name in await self.workspace.prune(retention):
                log.info("removed the worktree %s, kept past its retention", name)
                await self.store.health.record("pruned_worktree", name, retention_seconds=retention)
        return cleaned

    async def forget(self, session_id: str) -> None:
        """Remove the session's engine home and every worktree it kept (those kept on purpose
        for ``worktree_retention_seconds`` are ``prune``'s)."""
        kept = re.compile(rf"{re.escape(session_id)}-\d+")
        for path in sorted(self.settings.worktrees.glob(f"{session_id}-*")):
            marked = path.with_name(path.name + ".done").exists()
            if kept.fullmatch(path.name) and path.is_dir() and not marked:
                await self.workspace.remove_path(path)
        home = self.settings.engine_homes / session_id
        await asyncio.to_thread(shutil.rmtree, home, ignore_errors=True)

    async def clean_up(self, session: Session, worktree: list[Worktree]) -> None:
        try:
            if worktree:
                if self.settings.worktree_retention_seconds > 0 or await self._leader_keeps(
                    session
                ):
                    self.workspace.mark_finished(worktree[0])
                else:
                    await self.workspace.remove(worktree[0])
            if session.mode == Mode.CHAT:
                await self.forget(session.id)  # and the worktrees of its earlier turns
            else:
                home = self.settings.engine_homes / session.id
                await asyncio.to_thread(shutil.rmtree, home, ignore_errors=True)
        except WorkspaceError:
            log.warning("session %s: could not remove its worktree", session.id, exc_info=True)

    async def _leader_keeps(self, session: Session) -> bool:
        """A task of an orch run keeps its worktree for its leader, who removes it with
        ``telecoder orch cleanup``."""
        if session.run_id is None:
            return False
        try:
            run = await self.store.runs.get(session.run_id)
        except SessionNotFound:
            return False
        return run.kind == RunKind.ORCH
