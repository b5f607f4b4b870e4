"""The remote-worker protocol, server side (``/api/workers/register|claim|renew``,
``/api/workers/{session}/events|finish``): a worker token may call it and nothing else; every
write of an attempt is fenced on its lease, so a stale lease's events and finish are refused
(409 ``lease_lost``); a drained worker's claim gets nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from telecoder.domain import NewSession
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.store.schema import sessions
from tests.server import client

ADMIN = "remote-admin-token-0123456789"


@pytest.fixture
async def tokens(store: Store) -> dict[str, dict[str, str]]:
    await store.users.add("alice", "member")
    _, member = await store.users.create_token("alice")
    _, worker = await store.users.create_token(None, role="worker")
    _, worker2 = await store.users.create_token(None, role="worker")
    return {
        name: {"authorization": f"Bearer {token}"}
        for name, token in (
            ("member", member),
            ("worker", worker),
            ("worker2", worker2),
            ("admin", ADMIN),
        )
    }


@pytest.fixture
def app(settings: Settings, store: Store) -> Any:
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{ADMIN}")}), store)


def register_body(worker_id: str) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "host": "far-host",
        "pid": 4242,
        "capacity": 2,
        "engines": ["shell"],
        "host_stats": {"cpu_count": 16, "mem_total": 64 << 30, "mem_available": 40 << 30},
    }


async def test_a_worker_token_runs_a_session_and_a_stale_lease_is_refused(
    app: Any, store: Store, tokens: dict[str, dict[str, str]]
):
    w = tokens["worker"]
    sid = (await store.sessions.create(NewSession(repo="/r", prompt="p", engine="shell"))).id
    async with client(app) as c:
        # A worker token: the protocol, and nothing else.
        assert (await c.get("/api/sessions", headers=w)).status_code == 403
        assert (await c.get("/api/workers", headers=w)).status_code == 403
        assert (await c.post("/api/workers/w-far/drain", headers=w)).status_code == 403
        claim = {"worker_id": "w-far"}
        member = await c.post("/api/workers/claim", json=claim, headers=tokens["member"])
        assert member.status_code == 403
        unknown = await c.post("/api/workers/claim", json=claim, headers=w)
        assert unknown.status_code == 403  # its token signed in no worker yet
        assert "register first" in unknown.json()["detail"]

        reg = await c.post("/api/workers/register", json=register_body("w-far"), headers=w)
        assert reg.status_code == 200, reg.text
        assert reg.json()["host_stats"]["cpu_count"] == 16
        assert reg.json()["host"] == "far-host"

        got = await c.post("/api/workers/claim", json={"worker_id": "w-far"}, headers=w)
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["session"]["id"] == sid
        assert body["lease"] == {"session_id": sid, "attempt": 1, "worker_id": "w-far"}
        assert body["lease_until"] > 0
        lease = {"worker_id": "w-far", "attempt": 1}
        nothing = await c.post("/api/workers/claim", json={"worker_id": "w-far"}, headers=w)
        assert nothing.status_code == 204

        renewal = {
            "worker_id": "w-far",
            "state": "working",
            "running": 1,
            "host_stats": {"cpu_count": 16, "load1": 3.5},
            "leases": [{"session_id": sid, "attempt": 1}],
        }
        beat = await c.post("/api/workers/renew", json=renewal, headers=w)
        assert beat.status_code == 200, beat.text
        assert beat.json()["drain"] is False
        assert beat.json()["held"][sid]["cancel_requested"] is False
        events = {"lease": lease, "events": [{"kind": "output", "data": {"line": "hi"}}]}
        sent = await c.post(f"/api/workers/{sid}/events", json=events, headers=w)
        assert sent.status_code == 200, sent.text
        assert sent.json()["last_seq"] >= 1
        bad = {"lease": lease, "events": [{"kind": "no-such-kind", "data": {}}]}
        assert (await c.post(f"/api/workers/{sid}/events", json=bad, headers=w)).status_code == 422

        # The far worker is presumed dead: its session goes to another worker (attempt 2).
        assert await store.queue.recover_worker("w-far") == [sid]
        async with store.db.write() as conn:  # its retry is due now, not after the backoff
            await conn.execute(update(sessions).values(available_at=0))
        # A worker token is one worker's: w-far's token cannot sign in or act as w-near.
        taken = await c.post("/api/workers/register", json=register_body("w-near"), headers=w)
        assert taken.status_code == 403, taken.text
        assert "worker w-far's" in taken.json()["detail"]
        w2 = tokens["worker2"]
        assert (
            await c.post("/api/workers/register", json=register_body("w-near"), headers=w2)
        ).status_code == 200
        posing = await c.post("/api/workers/claim", json={"worker_id": "w-near"}, headers=w)
        assert posing.status_code == 403, posing.text
        assert "not worker w-near's" in posing.json()["detail"]
        second = await c.post("/api/workers/claim", json={"worker_id": "w-near"}, headers=w2)
        assert second.json()["lease"]["attempt"] == 2

        # The stale lease: its events and its finish are refused, its renewal holds nothing.
        stale = await c.post(f"/api/workers/{sid}/events", json=events, headers=w)
        assert stale.status_code == 409, stale.text
        assert stale.json()["error"] == "lease_lost"
        done = {"status": "succeeded", "result": {"type": "text", "text": "from the far one"}}
        refused = await c.post(
            f"/api/workers/{sid}/finish", json={"lease": lease, "outcome": done}, headers=w
        )
        assert refused.status_code == 409, refused.text
        assert (await c.post("/api/workers/renew", json=renewal, headers=w)).json()["held"] == {}

        # The current lease finishes it.
        near = {"worker_id": "w-near", "attempt": 2}
        result = {"type": "text", "text": "answer"}
        finished = await c.post(
            f"/api/workers/{sid}/finish",
            json={
                "lease": near,
                "outcome": {"status": "succeeded", "result": result, "cost_usd": 0.01},
                "events": [{"kind": "message", "data": {"text": "answer"}}],
            },
            headers=w2,
        )
        assert finished.status_code == 200, finished.text
        assert finished.json()["status"] == "succeeded"
    final = await store.sessions.get(sid)
    assert final.result is not None
    assert final.result.text == "answer"
    (far,) = [x for x in await store.workers.list() if x.id == "w-far"]
    assert far.stats is not None
    assert far.stats.load1 == 3.5


async def test_a_drained_remote_worker_claims_nothing_and_hears_it(
    app: Any, store: Store, tokens: dict[str, dict[str, str]]
):
    w, admin = tokens["worker"], tokens["admin"]
    await store.sessions.create(NewSession(repo="/r", prompt="p", engine="shell"))
    async with client(app) as c:
        await c.post("/api/workers/register", json=register_body("w-far"), headers=w)
        assert (await c.post("/api/workers/w-far/drain", headers=admin)).status_code == 200
        got = await c.post("/api/workers/claim", json={"worker_id": "w-far"}, headers=w)
        assert got.status_code == 204
        beat = await c.post("/api/workers/renew", json={"worker_id": "w-far"}, headers=w)
        assert beat.json()["drain"] is True
        assert (await c.post("/api/workers/w-far/resume", headers=admin)).status_code == 200
        got = await c.post("/api/workers/claim", json={"worker_id": "w-far"}, headers=w)
        assert got.status_code == 200
    # Polling and heartbeats are not audited; signing in and the operator's drain are.
    actions = {row.action for row in await store.audit.list(limit=100)}
    assert "POST /api/workers/register" in actions
    assert "POST /api/workers/{worker_id}/drain" in actions
    assert "POST /api/workers/claim" not in actions
    assert "POST /api/workers/renew" not in actions
