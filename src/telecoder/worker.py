"""The worker: claim sessions, run up to N at once, keep their leases, stop gracefully.

One side task renews the leases of all the sessions the worker runs every
``heartbeat_seconds``, in one transaction (``Queue.renew``: one UPDATE for them all, however
many); the renewal also carries each session's cancel flag, so a cancel is noticed within one
interval (at once when a notice says so). A renewal that finds a lease gone stops that attempt
at once: the session belongs to another worker now and this one writes nothing more for it. A
worker that cannot reach the database until a lease runs out stops that attempt too, since by
then someone else may have the session.

The worker registers itself in the workers table, renews its own heartbeat there, recovers
sessions whose leases expired, and wakes up for new work on notices (PostgreSQL LISTEN across
hosts, or this process's own writes), polling every ``poll_seconds`` in case one is missed. At
start it requeues what an earlier, crashed process of the same worker id left running.

An operator may drain the worker (``telecoder workers drain``): the flag comes back with each
heartbeat; while it is set the worker claims nothing, its running sessions finish, and it
reports ``draining``; a resume wakes it to claim again. Each heartbeat carries the host's CPU
count, RAM total/available and load (``host_stats``).

On stop it turns ``draining``: running attempts are halted and their sessions handed back to
the queue, so another worker (or this one, restarted) takes them up without waiting for a lease
to expire; then it signs off as ``offline``.

A side task ends chats that waited ``chat_idle_seconds`` for a message and removes, on this
host, what ended sessions left behind (kept chat worktrees, engine homes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from telecoder import budgeting, tracing
from telecoder.domain import HostStats, Lease, Session, WorkerState
from telecoder.logformat import SESSION_ID
from telecoder.recorder import AttemptControl, StopReason, settle
from telecoder.settings import Settings
from telecoder.store import Claimed, Limits, Notice, NoticeKind, Store

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What runs one attempt: the pipeline (benchmarks plug in a no-op one)."""

    async def run(
        self, session: Session, lease: Lease, control: AttemptControl
    ) -> Session | None: ...

    async def sweep(self) -> list[str]:
        """Remove what ended sessions left on this host; their ids."""
        ...

    async def chats_ended(self, session_ids: list[str]) -> None:
        """What follows chats that ended idle, before their worktrees go (their memories)."""
        ...


class SideWork(Protocol):
    """Background work a worker owns besides its sessions (the warm pool's refill,
    ``warmpool.WorktreePool.run``): runs until ``halt`` is set, after the last attempt ended."""

    async def run(self, halt: asyncio.Event) -> None: ...


class AfterSessions(Protocol):
    """What follows a session's attempt beyond its own run: the judging of a best-of-N run
    (``bestof.Judging``), done by whoever ends its last candidate, and looked for in upkeep."""

    async def ended(self, session: Session | None) -> None: ...

    async def sweep(self) -> list[str]: ...


@dataclass(slots=True)
class _Held:
    """A lease the worker renews, and the attempt that stops when it is lost."""

    lease: Lease
    control: AttemptControl
    lease_until: float


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        pipeline: Runner,
        engines: Collection[str] | None = None,
        after: AfterSessions | None = None,
        side: SideWork | None = None,
    ) -> None:
        self.settings = settings
        self.side = side
        self.store = store
        self.pipeline = pipeline
        self.after = after
        self.engines = engines  # the engines this worker can run; None: any
        self.id = settings.worker_id
        self.limits = Limits(
            max_running=settings.max_running, max_running_per_repo=settings.max_running_per_repo
        )
        self._controls: dict[str, AttemptControl] = {}
        self._held: dict[str, _Held] = {}  # the leases to renew, by session id
        self._renew_now = asyncio.Event()  # renew before the interval is up (a cancel notice)
        self._renewer: tuple[asyncio.Task[None], asyncio.Event] | None = None  # and its halt
        self._wake = asyncio.Event()  # look for work now
        self._draining = False
        self._drained = False  # an operator drained it (read back from each heartbeat)
        self._paused = False  # as last seen by the upkeep (for its log line)

    @property
    def running(self) -> int:
        return len(self._controls)

    @property
    def state(self) -> WorkerState:
        if self._draining or self._drained:
            return WorkerState.DRAINING
        return WorkerState.WORKING if self._controls else WorkerState.IDLE

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
        if claimed.session.cancel_requested:
            control.stop(StopReason.CANCELLED)
        session_id = claimed.session.id
        self._controls[session_id] = control
        lease_until = claimed.session.lease_until or time.time() + self.settings.lease_seconds
        self._held[session_id] = held = _Held(claimed.lease, control, lease_until)
        if self._renewer is None:
            halt = asyncio.Event()
            self._renewer = (asyncio.create_task(self._renew(halt)), halt)
        known = SESSION_ID.set(session_id)  # JSON log lines of this attempt name it
        try:
            with tracing.attempt(
                session_id, claimed.lease.attempt, engine=claimed.session.engine, worker=self.id
            ):
                final = await self.pipeline.run(claimed.session, claimed.lease, control)
        finally:
            SESSION_ID.reset(known)
            if self._held.get(session_id) is held:
                del self._held[session_id]
            if not self._held and self._renewer is not None:
                # The last one: the renewer goes (a renewal under way is let finish).
                renewer, halt = self._renewer
                self._renewer = None
                halt.set()
                self._renew_now.set()
                await settle(renewer, grace=self.settings.lease_seconds)
            self._controls.pop(session_id, None)
            self._wake.set()  # a slot is free
        if self.after is not None and final is not None and final.run_id is not None:
            try:
                await self.after.ended(final)
            except Exception:  # the upkeep's sweep tries again
                log.warning("session %s: what follows it failed", session_id, exc_info=True)
        return final

    async def _renew(self, halt: asyncio.Event) -> None:
        """Renew the leases this worker holds, all at once, until ``halt``."""
        while not halt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renew_now.wait(), self.settings.heartbeat_seconds)
            self._renew_now.clear()
            if halt.is_set():
                return
            if not (held := list(self._held.values())):
                continue
            try:
                beats = await asyncio.wait_for(
                    self.store.queue.renew([h.lease for h in held]), self.settings.lease_seconds
                )
            except Exception:
                log.warning("worker %s: heartbeat failed", self.id, exc_info=True)
                now = time.time()
                for h in held:
                    if now >= h.lease_until:
                        # Not renewed in time: another worker may hold the session by now.
                        log.warning("session %s: lease expired unrenewed", h.lease.session_id)
                        self._lose(h)
                continue
            for h in held:
                if self._held.get(h.lease.session_id) is not h:
                    continue  # it ended meanwhile
                beat = beats.get(h.lease.session_id)
                if beat is None:
                    log.warning("session %s: lease lost", h.lease.session_id)
                    self._lose(h)
                    continue
                h.lease_until = beat.lease_until
                if beat.cancel_requested:
                    h.control.stop(StopReason.CANCELLED)

    def _lose(self, held: _Held) -> None:
        """Stop an attempt whose lease is gone, and renew it no more."""
        held.control.stop(StopReason.LEASE_LOST)
        if self._held.get(held.lease.session_id) is held:
            del self._held[held.lease.session_id]

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind == NoticeKind.QUEUED:
            self._wake.set()
        elif notice.kind == NoticeKind.CANCEL and notice.session_id in self._held:
            self._renew_now.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run sessions until ``stop`` is set; then hand back what still runs."""
        capacity = self.settings.worker_concurrency
        await self.store.workers.register(
            self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            capacity=capacity,
            engines=sorted(self.engines) if self.engines is not None else (),
        )
        if recovered := await self.store.queue.recover_worker(self.id):
            log.warning(
                "worker %s: restarted after a crash; requeued %s", self.id, ", ".join(recovered)
            )
        unsubscribe = self.store.db.subscribe(self._on_notice)
        listener = self.store.listener(
            self._on_notice, on_connect=self._wake.set, name=f"telecoder-listen:{self.id}"
        )
        halt = asyncio.Event()
        upkeep = asyncio.create_task(self._upkeep(halt))
        chats = asyncio.create_task(self._end_idle_chats(halt))
        side = {upkeep, chats}
        if self.side is not None:
            side.add(background := asyncio.create_task(self._side(self.side, halt)))
        if listener is not None:
            side.add(asyncio.create_task(listener.run()))
        tasks: set[asyncio.Task[Session | None]] = set()
        stopping = asyncio.create_task(stop.wait())
        log.info("worker %s: up, %d slots", self.id, capacity)
        try:
            while not stop.is_set():
                for helper in side:
                    if helper.done():  # a side task died: the worker cannot go on
                        helper.result()
                        raise RuntimeError("a worker side task ended")
                self._wake.clear()
                claimable = len(tasks) < capacity and not self._drained
                claimed = await self._claim() if claimable else None
                if claimed is not None:
                    task = asyncio.create_task(self.execute(claimed))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    continue  # there may be more work right away
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {stopping, woken, *side},
                    timeout=self.settings.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        finally:
            self._draining = True
            stopping.cancel()
            with contextlib.suppress(Exception):
                await self.store.workers.beat(self.id, state=self.state, running=self.running)
            for control in self._controls.values():
                control.stop(StopReason.SHUTDOWN)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            halt.set()
            await settle(upkeep, grace=self.settings.lease_seconds)
            await settle(chats, grace=self.settings.lease_seconds)
            if self.side is not None:
                await settle(background, grace=self.settings.lease_seconds)
            for helper in side:
                helper.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            unsubscribe()
            with contextlib.suppress(Exception):
                await self.store.workers.beat(self.id, state=WorkerState.OFFLINE, running=0)
            log.info("worker %s: stopped", self.id)

    async def _side(self, work: SideWork, halt: asyncio.Event) -> None:
        await work.run(halt)
        await halt.wait()  # it ended early (it must not): the worker goes on without it

    async def _upkeep(self, halt: asyncio.Event) -> None:
        """Renew this worker's heartbeat and recover sessions whose leases expired."""
        while not halt.is_set():
            try:
                drained = await self.store.workers.beat(
                    self.id, state=self.state, running=self.running, stats=host_stats()
                )
                if drained != self._drained:
                    self._drained = drained
                    log.warning(
                        "worker %s: %s",
                        self.id,
                        "drained: running sessions finish, none starts"
                        if drained
                        else "resumed: claiming again",
                    )
                    self._wake.set()
                if await self.store.queue.recover_expired():
                    self._wake.set()
                await self._note_pause()
            except Exception:
                log.warning("worker %s: upkeep failed", self.id, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self.settings.heartbeat_seconds)

    async def _note_pause(self) -> None:
        """Say in this worker's log when claims are paused or resumed (``telecoder pause``)."""
        pause = await self.store.control.pause_state()
        if pause.paused == self._paused:
            return
        self._paused = pause.paused
        if pause.paused:
            log.warning(
                "worker %s: claims are paused (by %s): running sessions finish, none starts",
                self.id,
                pause.by or "someone",
            )
        else:
            log.info("worker %s: claims resumed", self.id)

    async def _end_idle_chats(self, halt: asyncio.Event) -> None:
        """End chats idle past ``chat_idle_seconds`` (``succeeded``, with their last result);
        remove what ended sessions left on this host."""
        period = min(max(self.settings.chat_idle_seconds / 4, 0.05), 60.0)
        while not halt.is_set():
            try:
                ended = await self.store.sessions.end_idle_chats(self.settings.chat_idle_seconds)
                for session_id in ended:
                    log.info("worker %s: chat %s ended (idle)", self.id, session_id)
                await self.pipeline.chats_ended(ended)
                await self.pipeline.sweep()
                if self.after is not None:
                    await self.after.sweep()
            except Exception:
                log.warning("worker %s: ending idle chats failed", self.id, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), period)

    async def _claim(self) -> Claimed | None:
        try:
            held = await budgeting.gate(self.store, self.settings)
            return await self.store.queue.claim(
                self.id, engines=self.engines, limits=self.limits, held=held
            )
        except Exception:
            log.warning("worker %s: claim failed", self.id, exc_info=True)
            return None


def host_stats() -> HostStats:
    """This host's CPU count, RAM total/available (``/proc/meminfo``) and 1-minute load;
    None for what it cannot tell."""
    memory: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                memory[name] = int(rest.split()[0]) * 1024  # kB
    load: float | None = None
    with contextlib.suppress(OSError, AttributeError):
        load = round(os.getloadavg()[0], 2)
    return HostStats(
        cpu_count=os.cpu_count(),
        mem_total=memory.get("MemTotal"),
        mem_available=memory.get("MemAvailable"),
        load1=load,
    )
