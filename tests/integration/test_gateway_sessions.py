"""Sessions through the gateway (shell engine running curl, real worker, real git): twenty
sessions hitting a rate limit all finish; a fallback is told in the session's events; a rate
limit past the retry budget requeues the session as ``rate_limited``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from telecoder.assemble import build_worker
from telecoder.domain import EventKind, FailureKind, NewSession, SessionStatus
from telecoder.settings import Settings
from telecoder.store import EndpointRow, Store
from tests.conftest import GitRepo
from tests.fakes.model_server import FakeModelServer

REAL = "sk-ant-REAL-sessions-0123456789"
CURL = (
    'curl -sSf -o /dev/null -X POST "$ANTHROPIC_BASE_URL/v1/messages" '
    '-H "x-api-key: $ANTHROPIC_API_KEY" -H "anthropic-version: 2023-06-01" '
    '-H "content-type: application/json" -H "x-test-tag: $PWD" '
    '-d \'{"model":"claude-sonnet-4-5","max_tokens":5,'
    '"messages":[{"role":"user","content":"hi"}]}\''
    " && echo answered"
)


def tuned(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"runtime": "local", "kill_grace_seconds": 1.0, "worker_concurrency": 20, **changes}
    )


def upstream(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", REAL)


async def run_all(settings: Settings, store: Store, news: list[NewSession], within: float = 120):
    worker = build_worker(settings, store)
    for new in news:
        await store.sessions.create(new)
    claims = [await store.queue.claim(worker.id) for _ in news]
    assert all(claims)
    async with asyncio.timeout(within):
        await asyncio.gather(*(worker.execute(c) for c in claims if c is not None))
    return [await store.sessions.get(n.id) for n in news]


def shell(repo: GitRepo, **kw: Any) -> NewSession:
    return NewSession(repo=str(repo.path), prompt=CURL, engine="shell", **kw)


async def test_twenty_sessions_on_a_rate_limited_endpoint_all_finish(
    settings, store, git_repo, monkeypatch
):
    with FakeModelServer() as server:
        upstream(monkeypatch, server.url)
        server.limit_for(2.0, "2")
        done = await run_all(tuned(settings), store, [shell(git_repo) for _ in range(20)])
    assert [s.status for s in done] == [SessionStatus.SUCCEEDED] * 20, [s.error for s in done]
    log = sorted(server.log, key=lambda r: r.arrived)
    first_429 = min(r.answered for r in log if r.status == 429)
    firsts = {r.tag: r for r in reversed(log)}
    retries = [r for r in log if firsts[r.tag] is not r]
    assert len({r.tag for r in log}) == 20
    assert all(r.arrived >= first_429 + 1.95 for r in retries)
    assert all(r.status == 200 for r in retries)
    assert all(r.arrived >= retries[0].answered - 0.005 for r in retries[1:])


async def test_a_session_says_when_it_falls_back(settings, store, git_repo, monkeypatch):
    with FakeModelServer() as second:
        upstream(monkeypatch, "http://127.0.0.1:9")  # nothing listens: down
        monkeypatch.setenv("SECOND_KEY", "sk-second-0123456789")
        await store.endpoints.add(
            EndpointRow(name="anthropic-2", url=second.url, kind="anthropic", key_env="SECOND_KEY")
        )
        chain = ("anthropic:claude-sonnet-4-5", "anthropic-2:claude-sonnet-4-5")
        [done] = await run_all(
            tuned(settings, tier_standard=chain), store, [shell(git_repo, tier="standard")]
        )
    assert done.status == SessionStatus.SUCCEEDED, done.error
    events = await store.events.list(done.id, after=0, limit=1000)
    progress = [e.data for e in events if e.kind == EventKind.PROGRESS]
    fallbacks = [d for d in progress if d["step"] == "fallback"]
    assert [f["message"] for f in fallbacks] == [
        "anthropic is down, using anthropic-2 (claude-sonnet-4-5)"
    ]
    assert second.model_requests()[0].headers["x-api-key"] == "sk-second-0123456789"
    assert await store.usage.models(done.id) == [
        {"endpoint": "anthropic-2", "model": "claude-sonnet-4-5", "requests": 1}
    ]


async def test_past_the_retry_budget_a_session_is_requeued_rate_limited(
    settings, store, git_repo, monkeypatch
):
    with FakeModelServer() as server:
        upstream(monkeypatch, server.url)
        server.limit_for(60.0, "20")
        started = time.time()
        [done] = await run_all(
            tuned(settings, gateway_retry_seconds=1.0, max_attempts=1), store, [shell(git_repo)]
        )
    assert done.status == SessionStatus.QUEUED, done.error
    assert done.failure_kind == FailureKind.RATE_LIMITED
    assert "kept rate-limiting" in (done.error or "")
    assert done.available_at >= started + 19  # not before the endpoint's Retry-After
    [attempt] = await store.sessions.attempts(done.id)
    assert attempt.failure_kind == FailureKind.RATE_LIMITED
