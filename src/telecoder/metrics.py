"""Prometheus exposition of the deployment's figures (``GET /metrics``).

Everything is read from the database at scrape time (``store.stats``): several workers on
several hosts share it, and per-process counters would each hold a part (and reset on restart).
So any one server can be scraped and tells the whole truth; scraping two tells it twice
(aggregate with ``max``, not ``sum``). Only ``telecoder_scrape_duration_seconds`` is this
process's own. Counters (``*_total``) only grow while rows are kept; the gauges of outbox and
channel rows count what is kept (those tables are pruned).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.store.budgets import defaults_of
from telecoder.store.stats import Histogram, Stats

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Every family /metrics exports (the alert rules may name only these; a test checks both ways).
NAMES = (
    "telecoder_queue_depth",
    "telecoder_queue_oldest_seconds",
    "telecoder_sessions_started_total",
    "telecoder_attempts_started_total",
    "telecoder_sessions_finished_total",
    "telecoder_attempt_duration_seconds",
    "telecoder_cost_usd_total",
    "telecoder_tokens_total",
    "telecoder_gateway_requests_total",
    "telecoder_gateway_request_duration_seconds",
    "telecoder_workers",
    "telecoder_worker_slots",
    "telecoder_worker_slots_in_use",
    "telecoder_deliveries",
    "telecoder_channel_events",
    "telecoder_paused",
    "telecoder_paused_seconds",
    "telecoder_budget_limit_usd",
    "telecoder_budget_spent_usd",
    "telecoder_scrape_duration_seconds",
)


def _gauge(name: str, doc: str, labels: list[str], values: dict[Any, Any]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _counter(name: str, doc: str, labels: list[str], values: dict[Any, Any]) -> Metric:
    family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _histogram(name: str, doc: str, label: str, found: Iterable[Histogram]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for h in found:
        buckets = [("+Inf" if le == float("inf") else repr(le), n) for le, n in h.buckets]
        family.add_metric(list(h.labels), buckets, h.total)
    return family


def families(stats: Stats, extra: Iterable[Metric] = ()) -> list[Metric]:
    """The metric families of one scrape's figures."""
    return [
        _gauge("telecoder_queue_depth", "Sessions by status.", ["status"], stats.queue),
        GaugeMetricFamily(
            "telecoder_queue_oldest_seconds",
            "How long the longest-waiting due queued session has waited (0: none).",
            value=stats.oldest_queued_seconds,
        ),
        _counter(
            "telecoder_sessions_started_total",
            "Sessions whose first attempt started.",
            ["engine"],
            stats.started,
        ),
        _counter(
            "telecoder_attempts_started_total",
            "Attempts started (retries and recoveries included).",
            ["engine"],
            stats.attempts,
        ),
        _counter(
            "telecoder_sessions_finished_total",
            "Sessions finished, by final status (succeeded, failed, cancelled, dead, …).",
            ["status", "engine"],
            stats.finished,
        ),
        _histogram(
            "telecoder_attempt_duration_seconds",
            "How long finished attempts ran.",
            "engine",
            stats.durations,
        ),
        _counter(
            "telecoder_cost_usd_total",
            "What model requests through the gateway cost (USD).",
            ["engine", "model"],
            stats.cost,
        ),
        _counter(
            "telecoder_tokens_total",
            "Tokens of model requests through the gateway.",
            ["engine", "model", "kind"],
            stats.tokens,
        ),
        _counter(
            "telecoder_gateway_requests_total",
            "Model requests the gateway forwarded, by endpoint and the HTTP status returned.",
            ["endpoint", "status"],
            stats.requests,
        ),
        _histogram(
            "telecoder_gateway_request_duration_seconds",
            "Model request latency through the gateway (to the last byte).",
            "endpoint",
            stats.latency,
        ),
        _gauge("telecoder_workers", "Live worker processes by state.", ["state"], stats.workers),
        GaugeMetricFamily(
            "telecoder_worker_slots", "Live workers' session slots.", value=stats.slots
        ),
        GaugeMetricFamily(
            "telecoder_worker_slots_in_use",
            "Live workers' slots running a session.",
            value=stats.slots_in_use,
        ),
        _gauge(
            "telecoder_deliveries",
            "Outgoing notifications kept, by channel (webhook, subscribers) and result "
            "(pending, delivered, failed).",
            ["channel", "result"],
            stats.deliveries,
        ),
        _gauge(
            "telecoder_channel_events",
            "Inbound channel deliveries kept that made no session, by channel and action.",
            ["channel", "action"],
            stats.channel_events,
        ),
        *extra,
    ]


async def collect(store: Store, settings: Settings) -> list[Metric]:
    """Read the figures from the database and build this scrape's families."""
    started = time.perf_counter()
    stats = await store.stats.read()
    pause = await store.control.pause_state()
    budgets = await store.budgets.status(
        defaults_of(settings.budget_daily_usd, settings.budget_monthly_usd)
    )
    now = time.time()
    extra: list[Metric] = [
        GaugeMetricFamily(
            "telecoder_paused",
            "1 while claims are paused (telecoder pause).",
            value=1 if pause.paused else 0,
        ),
        GaugeMetricFamily(
            "telecoder_paused_seconds",
            "How long claims have been paused (0: not paused).",
            value=max(0.0, now - pause.since) if pause.paused and pause.since else 0.0,
        ),
        _gauge(
            "telecoder_budget_limit_usd",
            "Period budgets' limits.",
            ["scope", "period"],
            {(b.scope, b.period): b.limit_usd for b in budgets},
        ),
        _gauge(
            "telecoder_budget_spent_usd",
            "What each period budget's current period spent.",
            ["scope", "period"],
            {(b.scope, b.period): b.spent_usd for b in budgets},
        ),
    ]
    extra.append(
        GaugeMetricFamily(
            "telecoder_scrape_duration_seconds",
            "How long this process took to read the figures (this process only).",
            value=time.perf_counter() - started,
        )
    )
    return families(stats, extra)


class _Fixed:
    def __init__(self, found: list[Metric]) -> None:
        self._found = found

    def collect(self) -> Iterator[Metric]:
        return iter(self._found)


def render(found: list[Metric]) -> bytes:
    """The text exposition format of ``found``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(found))
    return generate_latest(registry)
