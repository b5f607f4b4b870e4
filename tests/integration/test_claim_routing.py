"""What a claim takes: priority lanes, engines a worker has, global and per-repo limits —
the limits enforced atomically by many claimers at once, on both backends."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from telecoder import registry
from telecoder.assemble import worker_engines
from telecoder.domain import NewSession, SessionStatus
from telecoder.errors import EngineNotFound
from telecoder.settings import Settings
from telecoder.store import Claimed, Limits, Outcome, Store, open_store


async def make(store: Store, n: int, **fields: object) -> list[str]:
    ids = []
    for i in range(n):
        values = {"repo": "/repo", "prompt": f"task {i}", "engine": "shell", **fields}
        ids.append((await store.sessions.create(NewSession(**values))).id)  # type: ignore[arg-type]
    return ids


async def test_higher_priority_first_then_oldest(store: Store):
    low = await make(store, 1, priority=0)
    high1 = await make(store, 1, priority=5)
    mid = await make(store, 1, priority=1)
    high2 = await make(store, 1, priority=5)
    order = []
    while (claimed := await store.queue.claim("w")) is not None:
        order.append(claimed.session.id)
    assert order == high1 + high2 + mid + low


async def test_a_worker_claims_only_sessions_of_its_engines(store: Store):
    shell = await make(store, 2, engine="shell")
    codex = await make(store, 2, engine="codex")
    assert await store.queue.claim("none", engines=["aider"]) is None
    got = [await store.queue.claim("c", engines=["codex"]) for _ in range(3)]
    assert [c.session.id for c in got if c] == codex
    assert got[2] is None
    rest = [await store.queue.claim("any") for _ in range(3)]
    assert [c.session.id for c in rest if c] == shell


@pytest.fixture
async def claimers(db_url: str):
    """Independent stores (each its own connection pool), as separate workers have."""
    stores = [await open_store(db_url, lease_seconds=30, migrate=False) for _ in range(8)]
    yield stores
    for s in stores:
        await s.close()


async def claim_all(stores: list[Store], limits: Limits, rounds: int = 3) -> list[Claimed]:
    got: list[Claimed] = []
    for _ in range(rounds):
        results = await asyncio.gather(
            *(s.queue.claim(f"w{i}", limits=limits) for i, s in enumerate(stores) for _ in range(2))
        )
        got += [c for c in results if c is not None]
    return got


async def test_the_global_limit_holds_under_concurrent_claims(store: Store, claimers: list[Store]):
    await make(store, 12)
    limits = Limits(max_running=3)
    got = await claim_all(claimers, limits)
    assert len(got) == 3
    assert len({c.session.id for c in got}) == 3
    # A finished session frees a slot, for one claimer only.
    await store.queue.finish(got[0].lease, Outcome(status=SessionStatus.SUCCEEDED))
    more = await claim_all(claimers, limits)
    assert len(more) == 1
    running = await store.sessions.list(status=SessionStatus.RUNNING)
    assert len(running.sessions) == 3


async def test_the_per_repo_limit_holds_under_concurrent_claims(
    store: Store, claimers: list[Store]
):
    await make(store, 6, repo="/a")
    await make(store, 6, repo="/b")
    await make(store, 1, repo="/c")
    got = await claim_all(claimers, Limits(max_running_per_repo=2))
    assert Counter(c.session.repo for c in got) == {"/a": 2, "/b": 2, "/c": 1}


async def test_both_limits_together(store: Store, claimers: list[Store]):
    await make(store, 5, repo="/a")
    await make(store, 5, repo="/b")
    got = await claim_all(claimers, Limits(max_running=3, max_running_per_repo=2))
    repos = Counter(c.session.repo for c in got)
    assert sum(repos.values()) == 3
    assert max(repos.values()) == 2


async def test_limits_skip_a_busy_repo_for_a_lower_priority_one(store: Store):
    await make(store, 2, repo="/busy", priority=9)
    other = await make(store, 1, repo="/other", priority=0)
    limits = Limits(max_running_per_repo=1)
    first = await store.queue.claim("w", limits=limits)
    second = await store.queue.claim("w", limits=limits)
    assert first is not None
    assert first.session.repo == "/busy"
    assert second is not None
    assert second.session.id == other[0]
    assert await store.queue.claim("w", limits=limits) is None


def test_worker_engines_default_to_all_and_refuse_unknown_names(settings: Settings):
    assert worker_engines(settings) == registry.names("engines")
    only = settings.model_copy(update={"worker_engines": ("shell",)})
    assert worker_engines(only) == ["shell"]
    wrong = settings.model_copy(update={"worker_engines": ("shell", "no-such-agent")})
    with pytest.raises(EngineNotFound, match="no-such-agent"):
        worker_engines(wrong)
