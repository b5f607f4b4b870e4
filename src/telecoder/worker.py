"""The worker: claim sessions, run up to N at once, keep their leases, stop gracefully.

Each running session has a heartbeat side task that renews its lease every
``heartbeat_seconds``; the renewal also carries the session's cancel flag, so a cancel is
noticed within one interval. A renewal that finds the lease gone stops the attempt at once: the
session belongs to another worker now and this one writes nothing more for it.

On stop, running attempts are halted and their sessions handed back to the queue, so another
worker (or this one, restarted) takes them up without waiting for a lease to expire.

A side task ends chats that waited ``chat_idle_seconds`` for a message and removes, on this
host, what ended sessions left behind (kept chat worktrees, engine homes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

from telecoder.domain import Lease, Session
from telecoder.errors import LeaseLost
from telecoder.pipeline import AttemptControl, Pipeline, StopReason
from telecoder.settings import Settings
from telecoder.store import Claimed, Store

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        pipeline: Pipeline,
        engines: Collection[str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.engines = engines  # the engines this worker can run; None: any
        self.id = settings.worker_id
        self._controls: dict[str, AttemptControl] = {}

    @property
    def running(self) -> int:
        return len(self._controls)

    def stop_session(self, session_id: str, reason: StopReason) -> bool:
        """Stop a session this worker runs; False if it runs no such session."""
        control = self._controls.get(session_id)
        if control is None:
            return False
        control.stop(reason)
        return True

    async def execute(self, claimed: Claimed) -> Session | None:
        """Run one claimed session to its end (or until this worker must let it go)."""
        control = AttemptControl()
        self._controls[claimed.session.id] = control
        beat = asyncio.create_task(self._heartbeat(claimed.lease, control))
        try:
            return await self.pipeline.run(claimed.session, claimed.lease, control)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self._controls.pop(claimed.session.id, None)

    async def _heartbeat(self, lease: Lease, control: AttemptControl) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                beat = await self.store.queue.heartbeat(lease)
            except LeaseLost:
                log.warning("session %s: lease lost", lease.session_id)
                control.stop(StopReason.LEASE_LOST)
                return
            except Exception:
                # The database is unreachable for now; the lease may still hold. Try again.
                log.warning("session %s: heartbeat failed", lease.session_id, exc_info=True)
                continue
            if beat.cancel_requested:
                control.stop(StopReason.CANCELLED)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run sessions until ``stop`` is set; then hand back what still runs."""
        tasks: set[asyncio.Task[Session | None]] = set()
        slot_freed = asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        chats = asyncio.create_task(self._end_idle_chats())
        log.info("worker %s: up, %d slots", self.id, self.settings.worker_concurrency)
        try:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    await self.store.queue.recover_expired()
                free = len(tasks) < self.settings.worker_concurrency
                claimed = await self._claim() if free else None
                if claimed is not None:
                    task = asyncio.create_task(self.execute(claimed))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _: slot_freed.set())
                    continue  # there may be more work right away
                slot_freed.clear()
                freed = asyncio.create_task(slot_freed.wait())
                await asyncio.wait(
                    {stopping, freed},
                    timeout=self.settings.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                freed.cancel()
        finally:
            stopping.cancel()
            chats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chats
            for control in self._controls.values():
                control.stop(StopReason.SHUTDOWN)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            log.info("worker %s: stopped", self.id)

    async def _end_idle_chats(self) -> None:
        """End chats idle past ``chat_idle_seconds`` (``succeeded``, with their last result);
        remove what ended sessions left on this host."""
        period = min(max(self.settings.chat_idle_seconds / 4, 0.05), 60.0)
        while True:
            try:
                for session_id in await self.store.sessions.end_idle_chats(
                    self.settings.chat_idle_seconds
                ):
                    log.info("worker %s: chat %s ended (idle)", self.id, session_id)
                await self.pipeline.sweep()
            except Exception:
                log.warning("worker %s: ending idle chats failed", self.id, exc_info=True)
            await asyncio.sleep(period)

    async def _claim(self) -> Claimed | None:
        try:
            return await self.store.queue.claim(self.id, engines=self.engines)
        except Exception:
            log.warning("worker %s: claim failed", self.id, exc_info=True)
            return None
