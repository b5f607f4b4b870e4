"""The upkeep a server does itself for the sessions remote workers run.

A local worker (``worker.Worker``) does more than run its sessions: it judges a best-of-N run
when it ends the run's last candidate (``bestof.Judging``), and a side task ends chats that
waited ``chat_idle_seconds`` for a message (with their memories step) and looks for ended
best-of runs nobody judged. A ``telecoder worker --server`` host has no database: what it ends
goes through the server's ``/finish`` route, so the server does these:

- ``ended(session)``, called by ``/finish`` with the session as it is then: a best-of run
  whose last candidate it was is judged, in the background (the worker's call returns at
  once; the judge claims the verdict exactly once, whoever else looks);
- ``run(stop)``, started by a server with no embedded worker (a server with one leaves it to
  that worker's side task): every ``chat_idle_seconds / 4`` (at most a minute) it ends the
  idle chats, takes their memories where it can (``Remembering.chat_ended``: from a worktree
  this host kept; a remote host's stays there, so nothing is remembered from it), and judges
  the ended best-of runs that have no verdict yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telecoder.background import Background
from telecoder.bestof import Judging
from telecoder.domain import Session
from telecoder.masking import Masker
from telecoder.remembering import Remembering
from telecoder.settings import Settings
from telecoder.store import Store

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        judging: Judging,
        remembering: Remembering,
        masker: Masker | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.judging = judging
        self.remembering = remembering
        self.masker = masker if masker is not None else Masker.from_settings(settings)
        self._judging = Background("upkeep")  # the runs being judged, held till done

    def ended(self, session: Session) -> None:
        """An attempt of ``session`` ended on a remote worker: judge its best-of run if that
        was the run's last candidate (in the background)."""
        if session.run_id is None or not session.status.terminal:
            return
        self._judging.start(self.judging.ended(session), f"judging run {session.run_id}")

    async def settle(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the judging under way (at shutdown), then stop what
        is left (the sweep judges it again), so no task outlives the loop with a connection."""
        await self._judging.settle(grace)

    async def once(self) -> list[str]:
        """One round: the idle chats ended (their ids), the unjudged runs judged."""
        ended = await self.store.sessions.end_idle_chats(self.settings.chat_idle_seconds)
        for session_id in ended:
            log.info("chat %s ended (idle)", session_id)
            await self.remembering.chat_ended(session_id, self.masker)
        await self.judging.sweep()
        return ended

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set; a failed round is logged, and the next one tries."""
        period = min(max(self.settings.chat_idle_seconds / 4, 0.05), 60.0)
        while not stop.is_set():
            try:
                await self.once()
            except Exception:
                log.warning("the server's upkeep failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
