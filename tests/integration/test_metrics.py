"""``GET /metrics``: Prometheus's parser reads it, and the figures move as a session runs (a real
worker, the shell engine, real git) and as the gateway records usage. Its auth: an API token, or
``TELECODER_METRICS_TOKEN`` alone. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from telecoder import metrics
from telecoder.assemble import build_worker
from telecoder.domain import SessionStatus
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.integration.test_engine_shell import request, tuned
from tests.integration.test_pause import wait_status
from tests.server import client
from tests.usage_rows import row

API = {"authorization": "Bearer api-secret"}
SCRAPER = {"authorization": "Bearer scrape-secret"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """Family names (as exported, counters with ``_total``) and every sample by name+labels."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(c: Any, headers: dict[str, str] = SCRAPER) -> tuple[set[str], Samples]:
    response = await c.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_metrics_parse_and_move_as_a_session_runs(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    settings = tuned(
        settings,
        runtime="local",
        worker_id="w-metrics",
        api_token=SecretStr("api-secret"),
        metrics_token=SecretStr("scrape-secret"),
        budget_daily_usd=10.0,
    )
    app = create_app(settings, store, start_workers=build_worker(settings, store).run)
    async with client(app) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (
            await c.get("/metrics", headers={"authorization": "Bearer nope"})
        ).status_code == 401
        assert (await c.get("/api/workers", headers=SCRAPER)).status_code == 401  # metrics only
        names, before = await scrape(c, API)
        assert names == set(metrics.NAMES)  # every family, even with nothing to count yet
        assert value(before, "telecoder_queue_depth", status="queued") == 0

        await store.control.pause(by="test")
        new = request(git_repo, "sleep 0.3; echo hi > hi.txt")
        await store.sessions.create(new)
        _, paused = await scrape(c)
        assert value(paused, "telecoder_queue_depth", status="queued") == 1
        assert value(paused, "telecoder_paused") == 1
        await store.control.resume()
        assert await wait_status(store, new.id, SessionStatus.SUCCEEDED, SessionStatus.FAILED) == (
            SessionStatus.SUCCEEDED
        )
        await store.usage.record(row(time.time(), session_id=new.id, engine="shell"))
        await store.usage.record(
            row(time.time(), session_id=new.id, engine="shell", latency_ms=3000.0, status=429)
        )
        for _ in range(100):  # the worker's heartbeat says it is idle again
            _, after = await scrape(c)
            if value(after, "telecoder_worker_slots_in_use") == 0:
                break
            await asyncio.sleep(0.05)

    assert value(after, "telecoder_paused") == 0
    assert value(after, "telecoder_queue_depth", status="queued") == 0
    assert value(after, "telecoder_queue_depth", status="succeeded") == 1
    assert value(after, "telecoder_sessions_started_total", engine="shell") == 1
    assert value(after, "telecoder_attempts_started_total", engine="shell") == 1
    finished = value(after, "telecoder_sessions_finished_total", status="succeeded", engine="shell")
    assert finished == 1
    assert value(after, "telecoder_attempt_duration_seconds_count", engine="shell") == 1
    assert value(after, "telecoder_attempt_duration_seconds_sum", engine="shell") >= 0.3
    assert value(after, "telecoder_attempt_duration_seconds_bucket", engine="shell", le="+Inf") == 1
    model = {"engine": "shell", "model": "claude-sonnet-4-5"}
    assert value(after, "telecoder_cost_usd_total", **model) == 0.02
    assert value(after, "telecoder_tokens_total", kind="input", **model) == 200
    assert value(after, "telecoder_tokens_total", kind="output", **model) == 20
    assert value(after, "telecoder_gateway_requests_total", endpoint="anthropic", status="429") == 1
    latency = "telecoder_gateway_request_duration_seconds_bucket"
    assert value(after, latency, endpoint="anthropic", le="0.25") == 1
    assert value(after, latency, endpoint="anthropic", le="5.0") == 2
    assert value(after, "telecoder_workers", state="idle") == 1
    assert value(after, "telecoder_worker_slots") == settings.worker_concurrency
    assert value(after, "telecoder_budget_limit_usd", scope="global", period="daily") == 10.0
    assert value(after, "telecoder_budget_spent_usd", scope="global", period="daily") == 0.02
