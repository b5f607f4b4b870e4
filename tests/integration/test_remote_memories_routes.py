"""The memory routes of a remote worker's attempts (``/api/workers/{id}/memories``), on the app
with a real store (SQLite and PostgreSQL), through the worker's own client side
(``remote_state``) and a real scratch store: a running attempt is given its repository's
memories and no other's; an ended session's summary is stored on the server under the
session's repository, once, however often it is sent; a stale or unended lease is refused."""

from __future__ import annotations

from pathlib import Path

import httpx

from telecoder import memory
from telecoder.domain import MemoryKind, NewSession, SessionStatus
from telecoder.domain.wire import session_of
from telecoder.masking import Masker
from telecoder.remote_state import ServerMemories, ServerRecall, carry_spend
from telecoder.remote_worker import scratch_session
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Outcome, Store, open_store
from telecoder.workerclient import WorkerClient
from tests.server import serving

W = "far-memories"
REPO = "/nowhere/repo"


async def test_a_remote_attempt_recalls_and_remembers_on_the_server_once(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"memory_embedder": "none"})
    ours = await store.memories.add(text="the login test needs the fake clock", repo=REPO)
    await store.memories.add(text="the login test of another repository", repo="/elsewhere")
    sid = (await store.sessions.create(scratch_new(REPO, "fix the login test"))).id
    scratch = await open_store(f"sqlite:///{tmp_path / 'scratch.db'}")
    try:
        async with (
            serving(create_app(settings, store)) as url,
            WorkerClient(url) as api,
            httpx.AsyncClient(base_url=url) as c,
        ):
            await api.register(W, host="far", pid=1, capacity=1, engines=(), stats=None)
            got = await api.claim(W, None)
            assert got is not None
            server_session = session_of(got["session"])
            claimed = await scratch.queue.adopt(
                scratch_session(server_session), attempt=1, worker_id=W
            )
            claimed = await carry_spend(scratch, claimed, server_session)
            session, lease = claimed.session, claimed.lease

            # Recall: the server's memories of this repository only.
            found, facts = await ServerRecall(api)(session, "the login test", 3)
            assert [r.memory.id for r in found] == [ours.id]
            assert (found[0].memory.text, facts) == (ours.text, [])
            stale = {"worker_id": W, "attempt": 2}
            refused = await c.post(
                f"/api/workers/{sid}/memories/recall",
                json={"lease": stale, "query": "login", "k": 3},
            )
            assert (refused.status_code, refused.json()["error"]) == (409, "lease_lost")

            # Remember: refused while the attempt runs (the summary follows its end).
            memories = ServerMemories(scratch, api)
            body = {"lease": {"worker_id": W, "attempt": 1}, "text": "Task: x"}
            early = await c.post(f"/api/workers/{sid}/memories", json=body)
            assert (early.status_code, early.json()["error"]) == (409, "lease_lost")
            await api.finish(lease, Outcome(status=SessionStatus.SUCCEEDED), ())
            await scratch.queue.finish(lease, Outcome(status=SessionStatus.SUCCEEDED))
            stored = []
            for _ in range(2):  # the first answer was lost: sent again
                scratch.memories = memories
                stored.append(
                    await memory.remember(
                        scratch,
                        text="Task: fix the login test\nOutcome: succeeded",
                        masker=Masker(),
                        repo=session.repo,
                        kind=MemoryKind.SESSION,
                        prompt="fix the login test",
                        outcome="succeeded",
                        files=["tests/test_login.py"],
                        session_id=sid,
                    )
                )
            assert stored[0].id == stored[1].id
            mine = [m for m in await store.memories.list(repo=REPO) if m.session_id == sid]
            assert [(m.id, m.kind, m.files) for m in mine] == [
                (stored[0].id, MemoryKind.SESSION, ("tests/test_login.py",))
            ]
            assert await scratch.memories.list() == []  # the host keeps no copy
            body["lease"] = stale
            lost = await c.post(f"/api/workers/{sid}/memories", json=body)
            assert (lost.status_code, lost.json()["error"]) == (409, "lease_lost")
    finally:
        await scratch.close()


async def test_the_scratch_copy_starts_from_the_servers_spend(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    new = scratch_new(REPO, "echo hi")
    await store.sessions.create(new)
    await store.usage.carry(new.id, cost_usd=0.4, input_tokens=300, output_tokens=30)
    scratch = await open_store(f"sqlite:///{tmp_path / 'scratch.db'}")
    try:
        server = await store.sessions.get(new.id)
        claimed = await scratch.queue.adopt(scratch_session(server), attempt=2, worker_id=W)
        assert claimed.session.cost_usd == 0.0  # what the scratch store alone would say
        claimed = await carry_spend(scratch, claimed, server)
        here = await scratch.sessions.get(new.id)
        for got in (claimed.session, here):
            assert (got.cost_usd, got.input_tokens, got.output_tokens) == (0.4, 300, 30)
        assert (claimed.session.attempt, claimed.lease.attempt) == (2, 2)
    finally:
        await scratch.close()


async def test_the_servers_memory_settings_rule_a_remote_recall(
    settings: Settings, store: Store
) -> None:
    for i in range(5):
        await store.memories.add(text=f"the login test, note {i}", repo=REPO)
    sid = (await store.sessions.create(scratch_new(REPO, "fix the login test"))).id
    body = {"lease": {"worker_id": W, "attempt": 1}, "query": "the login test", "k": 10}
    for memory_on, top_k, expected in ((True, 2, 2), (False, 5, 0)):
        ours = settings.model_copy(
            update={"memory_embedder": "none", "memory": memory_on, "memory_top_k": top_k}
        )
        async with (
            serving(create_app(ours, store)) as url,
            WorkerClient(url) as api,
            httpx.AsyncClient(base_url=url) as c,
        ):
            if memory_on:
                await api.register(W, host="far", pid=1, capacity=1, engines=(), stats=None)
                assert await api.claim(W, None) is not None
            got = await c.post(f"/api/workers/{sid}/memories/recall", json=body)
            assert got.status_code == 200, got.text
            assert len(got.json()["repo"]) == expected  # the host asked for 10


def scratch_new(repo: str, prompt: str) -> NewSession:
    return NewSession(repo=repo, prompt=prompt, engine="shell")
