"""The store: sessions, the queue, the event log and the workers, on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telecoder.store.budgets import Budgets, Held
from telecoder.store.chains import Chains
from telecoder.store.channel_events import ChannelEvents
from telecoder.store.costs import By, Costs, Figures, Report
from telecoder.store.db import Database
from telecoder.store.deliveries import Deliveries, Once
from telecoder.store.endpoints import EndpointRow, Endpoints
from telecoder.store.events import Events
from telecoder.store.goals import Goal, Goals, GoalStatus
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
from telecoder.store.usage import Totals, UsageRow, Usages
from telecoder.store.workers import Registration, Workers

__all__ = [
    "Budgets",
    "By",
    "Chains",
    "ChannelEvents",
    "Claimed",
    "Costs",
    "Deliveries",
    "Delivery",
    "EndpointRow",
    "Endpoints",
    "Figures",
    "Goal",
    "GoalStatus",
    "Goals",
    "Heartbeat",
    "Held",
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
    "Registration",
    "Repo",
    "Report",
    "Repos",
    "Route",
    "Runs",
    "SlotTaken",
    "Store",
    "Subscription",
    "Subscriptions",
    "Totals",
    "UsageRow",
    "Usages",
    "open_store",
]


class Store:
    def __init__(self, db: Database, *, lease_seconds: float) -> None:
        self.db = db
        self.sessions = Sessions(db)
        self.queue = Queue(db, lease_seconds=lease_seconds)
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
        # A worker that has not renewed its heartbeat for a lease's length is gone.
        self.workers = Workers(db, stale_after=lease_seconds)

    def listener(self, on_notice: Callable[[Notice], None], **options: Any) -> Listener | None:
        """A PostgreSQL listener for notices of other processes; None on SQLite (one host:
        notices of this process arrive through ``db.subscribe``, others are polled for)."""
        if self.db.is_sqlite:
            return None
        return Listener(self.db.dsn, on_notice, **options)

    async def close(self) -> None:
        await self.db.dispose()


async def open_store(url: str, *, lease_seconds: float = 30.0, migrate: bool = True) -> Store:
    """Open the database at ``url``, bringing its schema up to date unless told not to."""
    db = Database(url)
    if migrate:
        try:
            await upgrade(db)
        except BaseException:
            await db.dispose()  # its connections closed now, not by the garbage collector
            raise
    return Store(db, lease_seconds=lease_seconds)
