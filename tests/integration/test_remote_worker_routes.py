"""The remote-worker routes that carry an attempt's progress and usage to the server
(``/api/workers/{id}/progress`` and ``/usage``), on the app with a real store (SQLite and
PostgreSQL): fenced on the lease, a usage resend counts nothing twice, the follow-up rules start
a chain on the server when ``/finish`` ends the session, the model is the one the rows name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from telecoder.domain import EventKind, NewRun, NewSession, RunKind
from telecoder.domain.wire import session_of
from telecoder.remote_worker import scratch_session
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from telecoder.workerclient import WorkerClient, run_of
from tests.server import client, serving

W = "far-routes"


def row(cost: float, model: str = "gpt-4.1-mini", **more: Any) -> dict[str, Any]:
    return {
        "endpoint": "openai",
        "api": "openai-chat",
        "status": 200,
        "latency_ms": 12.5,
        "ts": 1_790_000_000.0,
        "model": model,
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": cost,
        **more,
    }


async def claimed(c: httpx.AsyncClient, store: Store) -> tuple[str, dict[str, Any]]:
    new = NewSession(repo="/nowhere/repo", prompt="echo hi", engine="shell")
    await store.sessions.create(new)
    body = {"worker_id": W, "host": "far", "pid": 1, "capacity": 1}
    assert (await c.post("/api/workers/register", json=body)).status_code == 200
    got = await c.post("/api/workers/claim", json={"worker_id": W})
    assert got.status_code == 200, got.text
    lease = got.json()["lease"]
    return new.id, {"worker_id": lease["worker_id"], "attempt": lease["attempt"]}


async def test_progress_and_usage_are_fenced_and_a_resend_counts_nothing_twice(
    settings: Settings, store: Store
) -> None:
    app = create_app(settings, store)
    async with client(app) as c:
        sid, lease = await claimed(c, store)
        usage = f"/api/workers/{sid}/usage"
        rows = [row(0.25), row(0.5), row(0.01, model="other")]
        for _ in range(2):  # the answer to the first was lost: sent again, from the first
            sent = await c.post(usage, json={"lease": lease, "first": True, "rows": rows[:2]})
            assert sent.json() == {"rows": 2}
        more = await c.post(usage, json={"lease": lease, "first": False, "rows": rows[2:]})
        assert more.json() == {"rows": 3}
        session = await store.sessions.get(sid)
        assert (round(session.cost_usd, 2), session.input_tokens) == (0.76, 300)
        assert len(await store.usage.of_session(sid)) == 3

        rules = {
            "max_depth": 3,
            "on_success": [{"prompt": "echo next on {{ session.branch }}"}],
        }
        progress = f"/api/workers/{sid}/progress"
        body = {
            "lease": lease,
            "base_sha": "a" * 40,
            "branch": "telecoder/x",
            "follow_ups": rules,
            "engine": "builtin",
            "budget_usd": None,
        }
        done = await c.post(progress, json=body)
        assert done.status_code == 204, done.text
        bad = {**rules, "on_success": [{"prompt": "{{ session.colour }}"}]}
        refused = await c.post(progress, json={"lease": lease, "follow_ups": bad})
        assert refused.status_code == 422
        assert "unknown placeholder" in refused.text

        # Another attempt's lease: refused, nothing written.
        stale = {**lease, "attempt": lease["attempt"] + 1}
        for path, payload in (
            (usage, {"lease": stale, "first": True, "rows": []}),
            (progress, {"lease": stale, "base_sha": "b" * 40}),
            (progress, {"lease": stale}),
        ):
            lost = await c.post(path, json=payload)
            assert (lost.status_code, lost.json()["error"]) == (409, "lease_lost"), path
        [attempt] = await store.sessions.attempts(sid)
        assert (attempt.base_sha, attempt.branch) == ("a" * 40, "telecoder/x")
        assert len(await store.usage.of_session(sid)) == 3

        outcome = {"status": "succeeded", "result": None}
        ended = await c.post(
            f"/api/workers/{sid}/finish", json={"lease": lease, "outcome": outcome}
        )
        assert ended.status_code == 200, ended.text
        final = ended.json()
        # What ran (the repository's engine; the model most requests named), and the chain.
        assert (final["engine"], final["engine_source"]) == ("builtin", "repo")
        assert (final["model"], final["budget_usd"]) == ("gpt-4.1-mini", None)
        notes = [e.data for e in await store.events.list(sid) if e.kind == EventKind.CHAIN]
        assert [n.get("spawned") is not None for n in notes] == [True]
        child = await store.sessions.get(notes[0]["spawned"])
        assert (child.parent_id, child.chain_id, child.depth) == (sid, sid, 1)
        assert child.prompt == f"echo next on {final['branch']}"


async def test_a_claim_gives_the_run_and_the_scratch_store_keeps_it_while_it_runs(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    """A best-of candidate run remotely must know it is one (it pushes its branch only, and
    leaves no memory): the claim names the run, the scratch store adopts it with the session
    and drops it with the session."""
    made, [candidate] = await store.runs.create(
        NewRun(kind=RunKind.BEST_OF, name="best of 1", spec={"n": 1}),
        [NewSession(repo="/nowhere/repo", prompt="echo hi", engine="shell")],
    )
    other = NewSession(repo="/nowhere/repo", prompt="echo later", engine="shell", priority=-1)
    await store.sessions.create(other)
    scratch = await open_store(f"sqlite:///{tmp_path / 'scratch.db'}")
    try:
        async with serving(create_app(settings, store)) as url, WorkerClient(url) as api:
            await api.register(W, host="far", pid=1, capacity=1, engines=(), stats=None)
            got = await api.claim(W, None)
            assert got is not None
            assert got["session"]["id"] == candidate.id
            run = run_of(got["run"])
            assert run is not None
            assert (run.id, run.kind, run.spec) == (made.id, RunKind.BEST_OF, {"n": 1})
            here = await scratch.queue.adopt(
                scratch_session(session_of(got["session"])), attempt=1, worker_id=W, run=run
            )
            assert here.session.run_id == made.id
            assert (await scratch.runs.get(made.id)).kind == RunKind.BEST_OF
            # The next session (no run) replaces it: its run goes with it.
            nxt = await api.claim(W, None)
            assert nxt is not None
            assert nxt.get("run") is None
            later = scratch_session(session_of(nxt["session"]))
            await scratch.queue.adopt(later, attempt=1, worker_id=W)
            assert await scratch.runs.list() == []
    finally:
        await scratch.close()
    assert run_of({"id": "r", "kind": "a-kind-from-the-future", "spec": {}}) is None
    assert run_of({"id": "r", "kind": "orch", "spec": {"leader": "lead"}}) is None


async def test_kept_names_the_workspaces_a_host_may_remove(
    settings: Settings, store: Store
) -> None:
    app = create_app(settings, store)
    async with client(app) as c:
        waiting, lease = await claimed(c, store)  # blocked with a question: kept by W
        end = {"status": "blocked", "question": "which one?"}
        done = await c.post(f"/api/workers/{waiting}/finish", json={"lease": lease, "outcome": end})
        assert done.status_code == 200, done.text
        cancelled, lease = await claimed(c, store)
        end = {"status": "blocked", "question": "and this?"}
        await c.post(f"/api/workers/{cancelled}/finish", json={"lease": lease, "outcome": end})
        await store.sessions.cancel(cancelled)  # ended on the server while it waited
        others = await store.sessions.create(NewSession(repo="/r", prompt="x", engine="shell"))
        taken = await store.queue.claim("someone-else", only=others.id)
        assert taken is not None
        ids = [waiting, cancelled, others.id, "nosuchsession"]
        got = await c.post("/api/workers/kept", json={"worker_id": W, "sessions": ids})
        assert got.status_code == 200, got.text
        assert got.json() == {"gone": sorted([cancelled, others.id, "nosuchsession"])}
        unknown = await c.post("/api/workers/kept", json={"worker_id": "nobody", "sessions": []})
        assert unknown.status_code == 404
        bad = await c.post("/api/workers/kept", json={"worker_id": W, "sessions": ["../x"]})
        assert bad.status_code == 422
