"""Usage rows for cost tests: what the gateway records, written through ``store.usage.record``."""

from __future__ import annotations

from typing import Any

from telecoder.domain import NewSession, SessionStatus
from telecoder.store import Outcome, Store, UsageRow
from telecoder.timerange import DAY

# 2026-11-20 00:00:00 UTC, and a moment on each following day.
D0 = 1795132800.0


def day(n: int, hour: float = 12) -> float:
    return D0 + n * DAY + hour * 3600


def row(ts: float, **kw: Any) -> UsageRow:
    values: dict[str, Any] = {
        "endpoint": "anthropic",
        "api": "anthropic",
        "status": 200,
        "latency_ms": 120.0,
        "model": "claude-sonnet-4-5",
        "engine": "claude-code",
        "repo": "/src/app",
        "user": "ann",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": 0.01,
        **kw,
    }
    return UsageRow(ts=ts, **values)


async def session(store: Store, prompt: str = "fix the flaky test", **kw: Any) -> str:
    new = NewSession(repo=kw.pop("repo", "/src/app"), prompt=prompt, engine="claude-code", **kw)
    return (await store.sessions.create(new)).id


async def seed(store: Store) -> dict[str, str]:
    """Two sessions and some traffic without one, over three days with a gap."""
    a = await session(store, "fix the flaky test")
    b = await session(store, "write the docs")
    rows = [
        row(day(0), session_id=a, cache_read_tokens=1000, cache_write_tokens=50),
        row(day(0, 13), session_id=a, cost_usd=0.02),
        row(
            day(0, 23.99),
            session_id=b,
            model="gpt-5",
            engine="codex",
            api="openai-chat",
            endpoint="openai",
            user="bob",
            cost_usd=0.5,
        ),
        # day 1: nothing; day 2: a model without a known price, and a request with no session
        row(
            day(2, 0.01),
            session_id=b,
            model="local-llm",
            endpoint="ollama",
            api="ollama",
            engine="codex",
            user="bob",
            cost_usd=None,
            input_tokens=7000,
            output_tokens=700,
        ),
        row(day(2, 5), user=None, repo=None, engine=None, cost_usd=0.003),
        row(day(5), session_id=a, cost_usd=1.0),  # outside the ranges below
    ]
    for r in rows:
        await store.usage.record(r)
    return {"a": a, "b": b}


async def finished(
    store: Store,
    prompt: str,
    cost: float,
    *,
    status=SessionStatus.SUCCEEDED,
    engine: str = "claude-code",
    model: str | None = None,
    repo: str = "/src/app",
) -> str:
    """A session run to its end through the queue, with ``cost`` metered by the gateway."""
    new = NewSession(repo=repo, prompt=prompt, engine=engine, model=model)
    claimed = await store.queue.create_claimed(new, "w1")
    assert claimed is not None
    if cost:
        await store.usage.record(row(day(0), session_id=new.id, cost_usd=cost, engine=engine))
    await store.queue.finish(claimed.lease, Outcome(status=status, retryable=False))
    return new.id
