"""A worker on another host: ``telecoder worker --server URL`` runs sessions for a remote
``telecoder serve`` through its API, with a ``worker`` token and no database credentials.

The host runs the ordinary pipeline against a private scratch store (SQLite under
``$TELECODER_HOME``), so the pipeline and the event recorder are the same code as everywhere;
what reaches the server goes through the worker endpoints (``workerclient.WorkerClient``):

- a claim gives the session and its lease; the session is copied into the scratch store as the
  same attempt of the same worker id (``Queue.adopt``), so the lease is one fencing token on
  both sides;
- the claim's session carries its totals so far: the scratch copy starts from them, so its
  budget counts what earlier attempts spent (``remote_state.carry_spend``); the memories the
  attempt recalls and leaves are the server's (``remote_state.attach``, done by the CLI);
- the attempt's events are forwarded in order, batched, with the lease
  (``remote_forward.Forwarder``: it tails the scratch event log); a refused lease (409
  ``lease_lost``) stops the attempt;
- one heartbeat every ``heartbeat_seconds`` renews the worker (its state, host CPU/RAM/load)
  and all its leases at once; a lease missing from the answer stops its attempt, a cancel flag
  cancels it, and a lease not renewed before it runs out (the server unreachable) stops it too;
- what the pipeline records on the attempt as it runs (base commit, branch, agent session, the
  follow-up rules of the repository's ``.telecoder.yml``) and on the session (the engine the
  repository chose, the budget in force) goes to ``/progress`` before the scratch store
  records it, so the server's copy is what a local worker's would be and its chains start there;
- the attempt's metered model requests (this host's gateway) go to ``/usage`` with its events
  and before its end (after a call that went unanswered, all of them again from the first: they
  replace what the server has), so the server's figures and ``telecoder costs`` count them as
  they come and the session's end names the model that answered;
- right before a push or a pull request the lease is renewed on the server (the pipeline's
  ``confirm_lease``): a worker cut off past its lease publishes nothing;
- the claim gives the session's run (kind, spec): the scratch copy has it, so a best-of
  candidate pushes its branch only, as on any worker;
- the attempt's end goes to ``/finish`` (or ``/release`` when this worker shuts down: the
  server requeues it at once) before the scratch store records it (``_ServerQueue``), so what
  the server refuses is not recorded here either. A SIGKILL leaves the lease to run out: the
  server's next claim requeues the session.

A chat's next turn (and a blocked task's) comes back to the worker that keeps its workspace
(``remote_chats``); the warm pool of the repositories it served is refilled here in the
background (``side``), as on a local worker. Best-of judging and idle chats are the server's
(``upkeep``).

The server unreachable (or the worker id still held by a process that died a moment ago):
calls are tried again with a growing pause, each failure logged on one line. A refused token
(401/403, or a token that is another worker's) stops the worker: ``Unauthorized``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from telecoder import remote_chats
from telecoder.domain import (
    EngineSource,
    Lease,
    NewEvent,
    NewSession,
    Session,
    WorkerState,
)
from telecoder.domain.wire import session_of
from telecoder.errors import (
    Conflict,
    LeaseLost,
    ServerUnavailable,
    StoreUnavailable,
    Unauthorized,
)
from telecoder.recorder import AttemptControl, StopReason, settle
from telecoder.remote_forward import Forwarder, attempt_usage, send_usage
from telecoder.remote_state import carry_spend
from telecoder.settings import Settings
from telecoder.store import Claimed, Heartbeat, Outcome, Store
from telecoder.store.queue import Queue
from telecoder.worker import Runner, SideWork, host_stats
from telecoder.workerclient import Held, WorkerClient

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


def scratch_session(session: Session) -> NewSession:
    """The claimed session as the scratch store takes it: with its run (the pipeline reads its
    kind) and its place in a chain, not its parent (not in the scratch store). What follows
    a session (chains, run dependants) is the server's."""
    return NewSession(
        run_id=session.run_id,
        chain_id=session.chain_id,
        depth=session.depth,
        id=session.id,
        repo=session.repo,
        prompt=session.prompt,
        engine=session.engine,
        engine_source=session.engine_source,
        model=session.model,
        base_ref=session.base_ref,
        mode=session.mode,
        priority=session.priority,
        forge=session.forge,
        max_attempts=session.max_attempts,
        timeout_seconds=session.timeout_seconds,
        origin=session.origin,
        budget_usd=session.budget_usd,
        tier=session.tier,
        task_key=session.task_key,
        steps=session.steps,
        read_only=session.read_only,
        branch=session.branch,
    )


class _ServerQueue(Queue):
    """The scratch store's queue, whose attempt endings go to the server first."""

    def __init__(self, store: Store, owner: RemoteWorker) -> None:
        old = store.queue
        super().__init__(
            store.db,
            lease_seconds=old.lease_seconds,
            retry_backoff_seconds=old.retry_backoff_seconds,
        )
        self._owner = owner

    async def finish(
        self, lease: Lease, outcome: Outcome, events: Sequence[NewEvent] = ()
    ) -> Session:
        async def tell(api: WorkerClient) -> None:
            await api.finish(lease, outcome, events)

        await self._owner.tell_server(lease, tell)
        return await super().finish(lease, outcome, events)

    async def record(self, lease: Lease, **fields: Any) -> None:
        """The attempt's progress, on the server first (its workspace path is this host's:
        it stays here)."""
        sent = {k: v for k, v in fields.items() if k in _PROGRESS and v is not None}
        if "follow_ups" in sent:
            sent["follow_ups"] = json.loads(sent["follow_ups"])
        if sent:
            await self._owner.progress(lease, sent)
        # The rules stay off the scratch store: its chains would be nobody's.
        here = {k: v for k, v in fields.items() if k != "follow_ups"}
        if here:
            await super().record(lease, **here)

    async def heartbeat(self, lease: Lease) -> Heartbeat:
        """Right before a push or a pull request: the server's word that the lease holds."""
        beat = await self._owner.confirm(lease)
        await super().heartbeat(lease)
        return beat

    async def record_budget(self, lease: Lease, budget_usd: float | None) -> None:
        await self._owner.progress(lease, {"budget_usd": budget_usd})
        await super().record_budget(lease, budget_usd)

    async def choose_engine(self, lease: Lease, engine: str, source: EngineSource) -> None:
        if source == EngineSource.REPO:  # the only one the server takes from a worker
            await self._owner.progress(lease, {"engine": engine})
        await super().choose_engine(lease, engine, source)

    async def release(self, lease: Lease, reason: str, events: Sequence[NewEvent] = ()) -> bool:
        released: list[bool] = []

        async def tell(api: WorkerClient) -> None:
            released.append(await api.release(lease, reason, events))

        await self._owner.tell_server(lease, tell)
        await super().release(lease, reason, events)
        return released[0]


_PROGRESS = ("base_sha", "branch", "engine_session_id", "follow_ups")  # attempt fields sent


@dataclass(slots=True)
class _Held:
    lease: Lease
    control: AttemptControl
    deadline: float  # time.monotonic() when the lease runs out unless renewed


class RemoteWorker:
    """Claims from a server and runs sessions here; ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        *,
        settings: Settings,
        api: WorkerClient,
        scratch: Store,
        pipeline: Runner,
        engines: Sequence[str] | None = None,
        side: SideWork | None = None,
    ) -> None:
        self.settings = settings
        self.side = side  # the warm pool's refill, as a local worker's
        self.api = api
        self.scratch = scratch
        self.pipeline = pipeline
        self.engines = engines
        self.id = settings.worker_id
        scratch.queue = _ServerQueue(scratch, self)
        self._held: dict[str, _Held] = {}
        self._forwarders: dict[str, Forwarder] = {}
        self._drained = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._fatal: asyncio.Future[None] | None = None
        self._cancelled: set[str] = set()  # claimed with their cancel flag set
        self._elsewhere: set[str] = set()  # turns whose kept workspace is not on this host
        self._adopted: set[str] = set()  # in the scratch store, claimed and not yet ended

    @property
    def running(self) -> int:
        return len(self._held)

    @property
    def state(self) -> WorkerState:
        if self._stopping or self._drained:
            return WorkerState.DRAINING
        return WorkerState.WORKING if self._held else WorkerState.IDLE

    async def progress(self, lease: Lease, fields: dict[str, Any]) -> None:
        """Record the attempt's progress on the server."""

        async def send(api: WorkerClient) -> None:
            await api.progress(lease, **fields)

        await self._retried(lease, send)

    async def _retried(self, lease: Lease, call: Any) -> None:
        """``call(api)`` for a running attempt, tried again while the server cannot be
        reached until the lease would run out unrenewed (then ``LeaseLost``: the server may
        have given the session to another worker)."""
        held = self._held.get(lease.session_id)
        deadline = held.deadline if held is not None else time.monotonic()
        delay = 0.2
        while True:
            try:
                await call(self.api)
                return
            except ServerUnavailable as e:
                if held is not None:
                    deadline = held.deadline  # renewed meanwhile, perhaps
                if time.monotonic() + delay > deadline:
                    raise LeaseLost(f"session {lease.session_id}: {e}") from None
                log.warning("session %s: the server waits: %s", lease.session_id, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def confirm(self, lease: Lease) -> Heartbeat:
        """Renew ``lease`` now (the server's answer), as ``progress`` tries again; LeaseLost
        when the server no longer has it as this worker's."""
        found: list[Held] = []

        async def renew(api: WorkerClient) -> None:
            renewal = await api.renew(
                self.id,
                state=self.state,
                running=self.running,
                stats=None,
                leases=[lease],
            )
            beat = renewal.held.get(lease.session_id)
            if beat is None:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
            found.append(beat)

        await self._retried(lease, renew)
        held = self._held.get(lease.session_id)
        if held is not None:
            held.deadline = time.monotonic() + max(0.0, found[0].lease_until - time.time())
        return Heartbeat(found[0].lease_until, found[0].cancel_requested)

    async def tell_server(self, lease: Lease, call: Any) -> None:
        """Forward what is left of the attempt's events and its usage, then ``call(api)``:
        the attempt's end. The server unreachable: ``StoreUnavailable``, so the pipeline
        tries again."""
        forwarder = self._forwarders.get(lease.session_id)
        try:
            if forwarder is not None:
                await forwarder.flush()  # the last events and usage rows
            else:
                await send_usage(self.api, lease, await attempt_usage(self.scratch, lease), 0)
            await call(self.api)
        except ServerUnavailable as e:
            raise StoreUnavailable(str(e)) from None
        if forwarder is not None:
            forwarder.closed = True  # the server has the attempt's end: nothing more goes

    async def run(self, stop: asyncio.Event) -> None:
        self._fatal = asyncio.get_running_loop().create_future()
        await self._register(stop)
        if stop.is_set():
            return
        halt = asyncio.Event()  # set once the last attempt ended: its lease is renewed till then
        beating = asyncio.create_task(self._heartbeat(halt))
        refilling = asyncio.create_task(self.side.run(halt)) if self.side is not None else None
        period = min(max(self.settings.chat_idle_seconds / 4, 0.5), 60.0)
        tidying = asyncio.create_task(
            remote_chats.keep_tidy(self.scratch, self.api, self.id, self.pipeline, period, halt)
        )
        tasks: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(stop.wait())
        log.info("worker %s: up, %d slots, server %s", self.id, self._capacity, self.api.shown_url)
        backoff = 0.0
        try:
            while not stop.is_set():
                if self._fatal.done():
                    self._fatal.result()
                if beating.done():
                    beating.result()
                    raise RuntimeError("the heartbeat ended")
                self._wake.clear()
                claimed: Claimed | None = None
                if len(tasks) < self._capacity and not self._drained:
                    try:
                        claimed = await self._claim()
                        backoff = 0.0
                    except ServerUnavailable as e:
                        backoff = min(max(backoff * 2, 1.0), MAX_BACKOFF)
                        log.warning(
                            "worker %s: claim failed: %s (again in %.0fs)", self.id, e, backoff
                        )
                if claimed is not None:
                    task = asyncio.create_task(self._execute(claimed))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    continue
                woken = asyncio.create_task(self._wake.wait())
                waits: set[asyncio.Future[Any]] = {stopping, woken, beating, self._fatal}
                await asyncio.wait(
                    waits,
                    timeout=backoff or self.settings.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        finally:
            self._stopping = True
            stopping.cancel()
            for held in self._held.values():
                held.control.stop(StopReason.SHUTDOWN)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            halt.set()
            if refilling is not None:
                await settle(refilling, grace=self.settings.lease_seconds)
            await settle(tidying, grace=self.settings.lease_seconds)
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._renew(WorkerState.OFFLINE)
            log.info("worker %s: stopped", self.id)

    @property
    def _capacity(self) -> int:
        return self.settings.worker_concurrency

    async def _register(self, stop: asyncio.Event) -> None:
        """Sign in, trying again while the server cannot be reached."""
        backoff = 1.0
        while not stop.is_set():
            try:
                await self.api.register(
                    self.id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    capacity=self._capacity,
                    engines=self.engines or (),
                    stats=host_stats(),
                )
                return
            except (ServerUnavailable, Conflict) as e:
                # Conflict: the id's previous process may have died a moment ago; its heartbeat
                # goes stale within a lease.
                log.warning("worker %s: cannot sign in: %s (again in %.0fs)", self.id, e, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _claim(self) -> Claimed | None:
        got = await self.api.claim(self.id, self.engines)
        if got is None:
            return None
        session = session_of(got["session"])
        # Kept: what runs here now, and the sessions waiting here (their next turns come here).
        claimed, elsewhere = await remote_chats.adopt(
            self.scratch, got, scratch_session(session), self._adopted
        )
        claimed = await carry_spend(self.scratch, claimed, session)  # its budget counts them
        if elsewhere:
            self._elsewhere.add(session.id)
        self._adopted.add(session.id)
        if session.cancel_requested:  # cancelled as it was claimed
            self._cancelled.add(session.id)
        return claimed

    async def _execute(self, claimed: Claimed) -> None:
        session, lease = claimed.session, claimed.lease
        control = AttemptControl()
        if session.id in self._cancelled:
            self._cancelled.discard(session.id)
            control.stop(StopReason.CANCELLED)
        remaining = self.settings.lease_seconds
        self._held[session.id] = _Held(lease, control, time.monotonic() + remaining)
        if self._stopping:  # the stop came between its claim and now: hand it back at once
            control.stop(StopReason.SHUTDOWN)
        after = await self.scratch.events.last_seq(session.id)  # its "running": the server's
        forwarder = Forwarder(self.api, self.scratch, lease, after)
        self._forwarders[session.id] = forwarder
        assert self._fatal is not None
        forwarding = asyncio.create_task(forwarder.run(control, self._fatal))
        try:
            if session.id in self._elsewhere:
                self._elsewhere.discard(session.id)
                await self.scratch.queue.finish(lease, remote_chats.elsewhere(session))
            else:
                await self.pipeline.run(session, lease, control)
        except Unauthorized as e:
            if not self._fatal.done():
                self._fatal.set_exception(e)
        except Exception:
            log.exception("session %s: the attempt failed here", session.id)
        finally:
            forwarder.closed = True
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
            self._forwarders.pop(session.id, None)
            self._held.pop(session.id, None)
            self._adopted.discard(session.id)
            self._wake.set()

    async def _renew(self, state: WorkerState) -> None:
        held = list(self._held.values())
        renewal = await self.api.renew(
            self.id,
            state=state,
            running=len(held),
            stats=host_stats(),
            leases=[h.lease for h in held],
        )
        if renewal.drain != self._drained:
            self._drained = renewal.drain
            log.warning(
                "worker %s: %s",
                self.id,
                "drained: running sessions finish, none starts"
                if renewal.drain
                else "resumed: claiming again",
            )
            self._wake.set()
        now, wall = time.monotonic(), time.time()
        for h in held:
            if self._held.get(h.lease.session_id) is not h:
                continue  # it ended while the renewal was under way
            beat = renewal.held.get(h.lease.session_id)
            forwarder = self._forwarders.get(h.lease.session_id)
            if beat is None and forwarder is not None and forwarder.closed:
                continue  # its end reached the server: the lease went with it
            if beat is None:
                log.warning("session %s: lease lost", h.lease.session_id)
                h.control.stop(StopReason.LEASE_LOST)
                continue
            h.deadline = now + max(0.0, beat.lease_until - wall)
            if beat.cancel_requested:
                h.control.stop(StopReason.CANCELLED)

    async def _heartbeat(self, halt: asyncio.Event) -> None:
        """Renew the worker and its leases every ``heartbeat_seconds`` until ``halt``."""
        while not halt.is_set():
            try:
                await self._renew(self.state)
            except ServerUnavailable as e:
                log.warning("worker %s: heartbeat failed: %s", self.id, e)
                now = time.monotonic()
                for h in list(self._held.values()):
                    if now >= h.deadline:
                        # Not renewed in time: the server may have given it to another worker.
                        log.warning("session %s: lease expired unrenewed", h.lease.session_id)
                        h.control.stop(StopReason.LEASE_LOST)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self.settings.heartbeat_seconds)
