"""``GET /api/health/history``: what the supervisor did — a dead worker's session requeued (in
the recovery's own transaction), a model endpoint found unhealthy by a real check then healthy
again, a kept worktree pruned past its retention (a real session, real git). SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import update

from telecoder.assemble import build_worker
from telecoder.domain import NewSession
from telecoder.gateway.endpoints import check_and_record, find
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import EndpointRow, Store
from telecoder.store.schema import endpoints, sessions
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port
from tests.fakes.model_server import FakeModelServer
from tests.integration.test_engine_shell import execute, request, tuned
from tests.server import client


async def history(c: Any, **params: Any) -> list[dict[str, Any]]:
    response = await c.get("/api/health/history", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def check(name: str, store: Store) -> bool | None:
    found = await find(store, [], name)
    assert found is not None
    async with httpx.AsyncClient() as http:
        await check_and_record(store, [found.spec], client=http)
    checked = await find(store, [], name)
    assert checked is not None
    assert checked.state is not None
    return checked.state.healthy


async def test_requeues_and_endpoint_changes_are_listed_newest_first(
    settings: Settings, store: Store
) -> None:
    new = NewSession(repo="/src/repo", prompt="echo hi", engine="shell")
    await store.sessions.create(new)
    assert await store.queue.claim("doomed-worker") is not None
    async with store.db.write() as conn:  # the worker died: its lease runs out
        await conn.execute(update(sessions).where(sessions.c.id == new.id).values(lease_until=0))
    assert await store.queue.recover_expired() == [new.id]

    with FakeModelServer() as model:
        await store.endpoints.add(
            EndpointRow(name="flaky", url=f"http://127.0.0.1:{free_port()}", kind="anthropic")
        )
        # What the registry and POST /api/endpoints/NAME/check do: check, record.
        assert await check("flaky", store) is False
        async with store.db.write() as conn:  # the endpoint comes back at another address
            await conn.execute(
                update(endpoints).where(endpoints.c.name == "flaky").values(url=model.url)
            )
        assert await check("flaky", store) is True
        assert await check("flaky", store) is True  # healthy again: no change, no entry
        async with client(create_app(settings, store)) as c:
            found = await history(c)
            only = await history(c, kind="requeued", limit=5)

    assert [(e["kind"], e["subject"]) for e in found] == [
        ("endpoint_healthy", "flaky"),
        ("endpoint_unhealthy", "flaky"),
        ("requeued", new.id),
    ]
    assert found[2]["detail"]["worker"] == "doomed-worker"
    assert "stopped renewing its lease" in found[2]["detail"]["error"]
    assert found[1]["detail"]["error"]
    assert [e["kind"] for e in only] == ["requeued"]


async def test_a_kept_worktree_is_pruned_past_its_retention_and_it_is_recorded(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    settings = tuned(settings, runtime="local", worktree_retention_seconds=0.2)
    worker = build_worker(settings, store)
    done = await execute(worker, store, request(git_repo, "echo kept > kept.txt"))
    kept = settings.worktrees / f"{done.id}-1"
    assert kept.is_dir()  # kept for its retention
    await worker.pipeline.sweep()
    assert kept.is_dir()  # not yet
    await asyncio.sleep(0.3)
    await worker.pipeline.sweep()
    assert not kept.exists()
    [pruned] = await store.health.history(kind="pruned_worktree")
    assert pruned.subject == kept.name
    assert pruned.detail == {"retention_seconds": 0.2}
