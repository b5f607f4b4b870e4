"""The store: sessions, the queue, the event log and the workers, on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telecoder.retry import BACKOFF_BASE_SECONDS
from telecoder.settings import Settings
from telecoder.store.affinity import Kept
from telecoder.store.audit import Audit, AuditRow
from telecoder.store.budgets import Budgets, Held
from telecoder.store.chains import Chains
from telecoder.store.channel_events import ChannelEvents
from telecoder.store.control import Control, PauseState
from telecoder.store.costs import By, Costs, Figures, Report
from telecoder.store.db import MAX_OVERFLOW, POOL_SIZE, Database
from telecoder.store.deliveries import Deliveries, Once
from telecoder.store.endpoints import EndpointRow, Endpoints
from telecoder.store.events import Events
from telecoder.store.goals import Goal, Goals, GoalStatus
from telecoder.store.health import HealthEvent, HealthLog
from telecoder.store.inbox import Inbox
from telecoder.store.jobs import Jobs, JobState
from telecoder.store.memories import Memories
from telecoder.store.migrations import upgrade
from telecoder.store.notify import Listener, Notice, NoticeKind
from telecoder.store.orch import Orch
from telecoder.store.outbox import Delivery, NotifyEvent, Outbox, Subscription, Subscriptions
from telecoder.store.queue import Claimed, Heartbeat, Limits, Outcome, Queue
from telecoder.store.repos import Repo, Repos, Route
from telecoder.store.runs import Runs, SlotTaken
from telecoder.store.sessions import Page, Sessions
from telecoder.store.stats import Stats, StatsReader
from telecoder.store.usage import Totals, UsageRow, Usages
from telecoder.store.users import Holder, TokenRow, User, Users
from telecoder.store.workers import Registration, Workers

__all__ = [
    "Audit",
    "AuditRow",
    "Budgets",
    "By",
    "Chains",
    "ChannelEvents",
    "Claimed",
    "Control",
    "Costs",
    "Deliveries",
    "Delivery",
    "EndpointRow",
    "Endpoints",
    "Figures",
    "Goal",
    "GoalStatus",
    "Goals",
    "HealthEvent",
    "HealthLog",
    "Heartbeat",
    "Held",
    "Holder",
    "Inbox",
    "JobState",
    "Jobs",
    "Limits",
    "Listener",
    "Memories",
    "Notice",
    "NoticeKind",
    "NotifyEvent",
    "Once",
    "Orch",
    "Outbox",
    "Outcome",
    "Page",
    "PauseState",
    "Registration",
    "Repo",
    "Report",
    "Repos",
    "Route",
    "Runs",
    "SlotTaken",
    "Stats",
    "StatsReader",
    "Store",
    "Subscription",
    "Subscriptions",
    "TokenRow",
    "Totals",
    "UsageRow",
    "Usages",
    "User",
    "Users",
    "open_store",
    "store_options",
]


class Store:
    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float,
        retry_backoff_seconds: float = BACKOFF_BASE_SECONDS,
    ) -> None:
        self.db = db
        self.sessions = Sessions(db)
        self.queue = Queue(
            db, lease_seconds=lease_seconds, retry_backoff_seconds=retry_backoff_seconds
        )
        self.events = Events(db)
        self.usage = Usages(db)
        self.costs = Costs(db)
        self.deliveries = Deliveries(db)
        self.subscriptions = Subscriptions(db)
        self.outbox = Outbox(db)
        self.endpoints = Endpoints(db)
        self.budgets = Budgets(db)
        self.repos = Repos(db)
        self.runs = Runs(db)
        self.chains = Chains(db)
        self.goals = Goals(db)
        self.jobs = Jobs(db)
        self.channel_events = ChannelEvents(db)
        self.inbox = Inbox(db)
        self.memories = Memories(db)
        self.orch = Orch(db)
        self.users = Users(db)
        self.audit = Audit(db)
        self.control = Control(db)
        self.health = HealthLog(db)
        # A worker that has not renewed its heartbeat for a lease's length is gone.
        self.workers = Workers(db, stale_after=lease_seconds)
        self.stats = StatsReader(db, stale_after=lease_seconds)
        self.kept = Kept(db)

    def listener(self, on_notice: Callable[[Notice], None], **options: Any) -> Listener | None:
        """A PostgreSQL listener for notices of other processes; None on SQLite (one host:
        notices of this process arrive through ``db.subscribe``, others are polled for)."""
        if self.db.is_sqlite:
            return None
        return Listener(self.db.dsn, on_notice, **options)

    async def close(self) -> None:
        await self.db.dispose()


def store_options(settings: Settings) -> dict[str, Any]:
    """``open_store``'s options from the settings: lease, retry backoff, pool, event notices."""
    return {
        "lease_seconds": settings.lease_seconds,
        "retry_backoff_seconds": settings.retry_backoff_seconds,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "event_notices": settings.bus_notify,
    }


async def open_store(
    url: str,
    *,
    lease_seconds: float = 30.0,
    retry_backoff_seconds: float = BACKOFF_BASE_SECONDS,
    migrate: bool = True,
    pool_size: int = POOL_SIZE,
    max_overflow: int = MAX_OVERFLOW,
    event_notices: bool = True,
) -> Store:
    """Open the database at ``url``, bringing its schema up to date unless told not to.

    ``pool_size``, ``max_overflow`` and ``event_notices``: see ``Database``."""
    db = Database(url, pool_size=pool_size, max_overflow=max_overflow, event_notices=event_notices)
    if migrate:
        try:
            await upgrade(db)
        except BaseException:
            await db.dispose()  # its connections closed now, not by the garbage collector
            raise
    return Store(db, lease_seconds=lease_seconds, retry_backoff_seconds=retry_backoff_seconds)
