"""A remote attempt's events and metered model requests, from its scratch store to the server
(``remote_worker`` runs one ``Forwarder`` an attempt).

The forwarder tails the scratch event log and sends what is new every ``FORWARD_SECONDS``, in
order, batched, with the lease; then the attempt's usage rows (this host's gateway metered them)
that the server has not got yet. After a call that went unanswered the usage rows go again from
the first, ``first=True``: they replace what the server has of the attempt, so nothing counts
twice. A refused lease (409 ``lease_lost``) stops the attempt; a refused token stops the worker
(``fatal``); the server unreachable is said once and tried again.
"""

from __future__ import annotations

import asyncio
import logging

from telecoder.domain import Lease, NewEvent
from telecoder.errors import LeaseLost, ServerUnavailable, Unauthorized
from telecoder.recorder import AttemptControl, StopReason
from telecoder.store import Store, UsageRow
from telecoder.workerclient import WorkerClient

log = logging.getLogger(__name__)

FORWARD_SECONDS = 0.2  # how often new events go to the server
BATCH = 500  # events per call (the server takes up to 1000)


async def attempt_usage(store: Store, lease: Lease) -> list[UsageRow]:
    """The attempt's metered requests (its gateway is this host's), oldest first."""
    found = await store.usage.of_session(lease.session_id)
    return [r for r in found if r.attempt == lease.attempt]


async def send_usage(api: WorkerClient, lease: Lease, rows: list[UsageRow], start: int) -> None:
    """``rows[start:]`` to the server; from 0, they replace what it has of the attempt."""
    for at in range(start, len(rows), BATCH):
        await api.usage(lease, rows[at : at + BATCH], first=at == 0)


class Forwarder:
    """Sends one attempt's events from the scratch store to the server, in order, and its
    metered model requests (so the server's figures and ``costs`` are live)."""

    def __init__(self, api: WorkerClient, store: Store, lease: Lease, after: int) -> None:
        self.api = api
        self.store = store
        self.lease = lease
        self.after = after  # the last scratch event already on the server (or not for it)
        self.usage_sent = 0  # the attempt's usage rows on the server
        self.usage_sure = True  # False: a call went unanswered: send them all again, first=True
        self.closed = False
        self._lock = asyncio.Lock()

    async def flush(self) -> None:
        """Send what the scratch store recorded since the last call. Raises LeaseLost,
        ServerUnavailable, Unauthorized."""
        async with self._lock:
            while not self.closed:
                found = await self.store.events.list(
                    self.lease.session_id, after=self.after, limit=BATCH
                )
                if not found:
                    break
                batch = [NewEvent(kind=e.kind, data=e.data, ts=e.ts) for e in found]
                await self.api.events(self.lease, batch)
                self.after = found[-1].seq
            if not self.closed:
                await self._usage()

    async def _usage(self) -> None:
        rows = await attempt_usage(self.store, self.lease)
        start = 0 if not self.usage_sure else self.usage_sent
        if start >= len(rows):
            return
        self.usage_sure = False
        await send_usage(self.api, self.lease, rows, start)
        self.usage_sent, self.usage_sure = len(rows), True

    async def run(self, control: AttemptControl, fatal: asyncio.Future[None]) -> None:
        waiting = False  # the server unreachable: said once, until it answers again
        while not self.closed:
            try:
                await self.flush()
                waiting = False
            except LeaseLost:
                log.warning("session %s: the server refused its lease", self.lease.session_id)
                control.stop(StopReason.LEASE_LOST)
                return
            except ServerUnavailable as e:
                if not waiting:
                    log.warning("session %s: events wait: %s", self.lease.session_id, e)
                waiting = True
            except Unauthorized as e:
                if not fatal.done():
                    fatal.set_exception(e)
                return
            await asyncio.sleep(FORWARD_SECONDS)
