"""``GET /api/workers``: what `telecoder workers` shows, over HTTP, including the server's own
embedded worker; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket

from telecoder.assemble import build_worker
from telecoder.domain import WorkerState
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.server import client


async def test_workers_are_listed_live_and_offline(settings: Settings, store: Store):
    await store.workers.register("far-away", host="h2", pid=7, capacity=3, engines=["shell"])
    await store.workers.register("gone", host="h3", pid=8, capacity=1, engines=[])
    await store.workers.beat("gone", state=WorkerState.OFFLINE, running=0)
    async with client(create_app(settings, store)) as c:
        everyone = await c.get("/api/workers")
        live = await c.get("/api/workers", params={"live": "true"})
    assert everyone.status_code == 200
    by_id = {w["id"]: w for w in everyone.json()}
    assert by_id.keys() == {"far-away", "gone"}
    assert by_id["far-away"] == {
        **by_id["far-away"],
        "host": "h2",
        "pid": 7,
        "capacity": 3,
        "engines": ["shell"],
        "state": "idle",
        "running": 0,
    }
    assert by_id["gone"]["state"] == "offline"
    assert [w["id"] for w in live.json()] == ["far-away"]


async def test_the_embedded_worker_registers_and_signs_off(settings: Settings, store: Store):
    settings = settings.model_copy(update={"worker_id": "embedded-1"})
    app = create_app(settings, store, start_workers=build_worker(settings, store).run)
    async with client(app) as c:
        for _ in range(100):
            found = (await c.get("/api/workers")).json()
            if found:
                break
            await asyncio.sleep(0.05)
        (me,) = found
        assert me["id"] == "embedded-1"
        assert (me["host"], me["pid"]) == (socket.gethostname(), os.getpid())
        assert me["state"] == "idle"
    # The server stopped: its worker signed off.
    (after,) = await store.workers.list()
    assert after.state == WorkerState.OFFLINE
