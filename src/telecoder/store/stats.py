"""What ``/metrics`` reads from the database at scrape time: the whole deployment's figures.

Several workers on several hosts write one database; counters kept in one process's memory
would each see a part. So every figure here is computed from the rows themselves — sessions,
attempts, usage, workers, outbox, control — and is the same whichever process is scraped.
Histograms are bucketed by the database (one ``SUM(CASE …)`` per bucket).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import SessionStatus
from telecoder.store.db import Database
from telecoder.store.schema import attempts, channel_events, outbox, sessions, usage, workers

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
# Seconds. An attempt runs from seconds (shell) to an hour (an agent's long task).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# Seconds. A model request: from a fast completion to a long streamed answer.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts (``le`` → count, ``+Inf`` last), the sum and the count."""

    labels: tuple[str, ...]
    buckets: tuple[tuple[float, int], ...]
    total: float
    count: int


@dataclass(slots=True)
class Stats:
    """One scrape's figures, labelled as the metrics are."""

    queue: dict[str, int] = field(default_factory=dict)  # status -> sessions
    oldest_queued_seconds: float = 0.0  # how long the longest-waiting due session has waited
    started: dict[str, int] = field(default_factory=dict)  # engine -> sessions started
    attempts: dict[str, int] = field(default_factory=dict)  # engine -> attempts started
    finished: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, engine)
    durations: list[Histogram] = field(default_factory=list)  # by engine
    cost: dict[tuple[str, str], float] = field(default_factory=dict)  # (engine, model) -> USD
    tokens: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (engine, model, kind)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, status)
    latency: list[Histogram] = field(default_factory=list)  # by endpoint
    workers: dict[str, int] = field(default_factory=dict)  # live workers by state
    slots: int = 0  # live workers' capacity
    slots_in_use: int = 0
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, result)
    channel_events: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, action)


def _histogram(column: Any, bounds: Sequence[float]) -> list[Any]:
    """The columns of a bucketed histogram of ``column``: one per bound, then sum and count."""
    return [
        *(func.sum(case((column <= bound, 1), else_=0)) for bound in bounds),
        func.sum(column),
        func.count(),
    ]


def _histograms(rows: Sequence[Any], bounds: Sequence[float]) -> list[Histogram]:
    found = []
    for row in rows:
        label, *values = row
        counts = [int(v or 0) for v in values[: len(bounds)]]
        count = int(values[len(bounds) + 1] or 0)
        found.append(
            Histogram(
                labels=(label or "",),
                buckets=(*zip(bounds, counts, strict=True), (float("inf"), count)),
                total=float(values[len(bounds)] or 0.0),
                count=count,
            )
        )
    return found


class StatsReader:
    def __init__(self, db: Database, *, stale_after: float) -> None:
        self._db = db
        self.stale_after = stale_after  # a worker silent this long is offline

    async def read(self, now: float | None = None) -> Stats:
        now = time.time() if now is None else now
        stats = Stats()
        async with self._db.read() as conn:
            await self._sessions(conn, stats, now)
            await self._usage(conn, stats)
            await self._workers(conn, stats, now)
            await self._deliveries(conn, stats)
        return stats

    async def _sessions(self, conn: AsyncConnection, stats: Stats, now: float) -> None:
        by_status = select(sessions.c.status, func.count()).group_by(sessions.c.status)
        stats.queue = {s.value: 0 for s in SessionStatus}
        for status, n in (await conn.execute(by_status)).all():
            stats.queue[status] = int(n)
        oldest = select(func.min(sessions.c.available_at)).where(
            sessions.c.status == SessionStatus.QUEUED.value, sessions.c.available_at <= now
        )
        first = (await conn.execute(oldest)).scalar()
        stats.oldest_queued_seconds = 0.0 if first is None else max(0.0, now - float(first))
        started = (
            select(sessions.c.engine, func.count(), func.sum(case((attempts.c.number == 1, 1))))
            .select_from(attempts.join(sessions, attempts.c.session_id == sessions.c.id))
            .group_by(sessions.c.engine)
        )
        for engine, n, first_attempts in (await conn.execute(started)).all():
            stats.attempts[engine] = int(n)
            stats.started[engine] = int(first_attempts or 0)
        finished = (
            select(sessions.c.status, sessions.c.engine, func.count())
            .where(sessions.c.finished_at.is_not(None))
            .group_by(sessions.c.status, sessions.c.engine)
        )
        for status, engine, n in (await conn.execute(finished)).all():
            stats.finished[(status, engine)] = int(n)
        seconds = cast(attempts.c.finished_at - attempts.c.started_at, Float)
        durations = (
            select(sessions.c.engine, *_histogram(seconds, DURATION_BUCKETS))
            .select_from(attempts.join(sessions, attempts.c.session_id == sessions.c.id))
            .where(attempts.c.finished_at.is_not(None))
            .group_by(sessions.c.engine)
        )
        stats.durations = _histograms((await conn.execute(durations)).all(), DURATION_BUCKETS)

    async def _usage(self, conn: AsyncConnection, stats: Stats) -> None:
        engine = func.coalesce(usage.c.engine, "")
        model = func.coalesce(usage.c.model, "")
        sums = select(
            engine,
            model,
            func.sum(func.coalesce(usage.c.cost_usd, 0.0)),
            func.sum(usage.c.input_tokens),
            func.sum(usage.c.output_tokens),
            func.sum(usage.c.cache_read_tokens),
            func.sum(usage.c.cache_write_tokens),
        ).group_by(engine, model)
        for e, m, cost, *tokens in (await conn.execute(sums)).all():
            stats.cost[(e, m)] = float(cost or 0.0)
            for kind, n in zip(TOKEN_KINDS, tokens, strict=True):
                stats.tokens[(e, m, kind)] = int(n or 0)
        # One scan for both: requests by (endpoint, status), latency buckets summed by endpoint.
        seconds = cast(usage.c.latency_ms, Float) / 1000.0
        latency = select(
            usage.c.endpoint, usage.c.status, *_histogram(seconds, LATENCY_BUCKETS)
        ).group_by(usage.c.endpoint, usage.c.status)
        by_endpoint: dict[str, list[float]] = {}
        for endpoint, status, *values in (await conn.execute(latency)).all():
            stats.requests[(endpoint, str(status))] = int(values[-1] or 0)
            summed = by_endpoint.setdefault(endpoint, [0.0] * len(values))
            for i, v in enumerate(values):
                summed[i] += float(v or 0)
        rows = [(endpoint, *values) for endpoint, values in sorted(by_endpoint.items())]
        stats.latency = _histograms(rows, LATENCY_BUCKETS)

    async def _workers(self, conn: AsyncConnection, stats: Stats, now: float) -> None:
        live = (
            select(
                workers.c.state,
                func.count(),
                func.sum(workers.c.capacity),
                func.sum(workers.c.running),
            )
            .where(workers.c.last_heartbeat >= now - self.stale_after, workers.c.state != "offline")
            .group_by(workers.c.state)
        )
        stats.workers = {"idle": 0, "working": 0, "draining": 0}
        for state, n, capacity, running in (await conn.execute(live)).all():
            stats.workers[state] = int(n)
            stats.slots += int(capacity or 0)
            stats.slots_in_use += int(running or 0)

    async def _deliveries(self, conn: AsyncConnection, stats: Stats) -> None:
        channel = case((outbox.c.subscription_id.is_(None), "subscribers"), else_="webhook")
        sent = select(channel, outbox.c.state, func.count()).group_by(channel, outbox.c.state)
        for name, state, n in (await conn.execute(sent)).all():
            stats.deliveries[(name, state)] = int(n)
        inbound = select(channel_events.c.channel, channel_events.c.action, func.count()).group_by(
            channel_events.c.channel, channel_events.c.action
        )
        for name, action, n in (await conn.execute(inbound)).all():
            stats.channel_events[(name, action)] = int(n)
