"""The durable queue: claim with a lease, heartbeat, finish, recover expired leases.

A claim is one write transaction: pick the best queued session (SQLite holds the write lock from
``BEGIN IMMEDIATE``; PostgreSQL skips rows other claimers hold with ``FOR UPDATE SKIP LOCKED``),
move it to ``running`` with ``attempt + 1`` and a lease, and insert the attempt row. With
concurrency limits, PostgreSQL claimers first take one transaction-scoped advisory lock, so the
count of running sessions they check cannot change under them (SQLite's write lock already
serialises them).

Every later write for the attempt is fenced on (session, attempt, worker) and running status:
the session row is locked or updated on that condition first, in the same transaction, so a
worker that lost its lease writes nothing more. Completing an attempt records its result, its
pushed commit, its last events and the session's next state in one transaction.

An attempt that ends without finishing is classified: ``crashed`` when its worker stopped
renewing the lease (or restarted), ``stopped`` when the worker handed it back on purpose.

``Queue`` is the one object callers hold; its methods live with their concept: ``claims``
(claim, create_claimed, adopt), ``leases`` (heartbeat, renew, hold, record, record_budget,
choose_engine), ``completion`` (finish, release) and ``recovery`` (recover_expired,
recover_worker).
"""

from __future__ import annotations

from telecoder import retry
from telecoder.store.claims import Claimed, Claims, Limits
from telecoder.store.completion import STOPPED, Completion, Outcome
from telecoder.store.db import Database
from telecoder.store.leases import Heartbeat, Leases
from telecoder.store.recovery import CRASHED, Recovery

__all__ = ["CRASHED", "STOPPED", "Claimed", "Heartbeat", "Limits", "Outcome", "Queue"]


class Queue(Claims, Leases, Completion, Recovery):
    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float,
        retry_backoff_seconds: float = retry.BACKOFF_BASE_SECONDS,
    ) -> None:
        self._db = db
        self.lease_seconds = lease_seconds
        self.retry_backoff_seconds = retry_backoff_seconds
