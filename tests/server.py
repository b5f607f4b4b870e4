"""Helpers for server tests: the app in-process (httpx over ASGI) or on a real port (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from telecoder.domain import EventKind, NewEvent, SessionStatus
from telecoder.store import Claimed, Outcome, Store

BASE = "http://127.0.0.1"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def client(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an httpx client speaking ASGI to it."""
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE, headers=headers
        ) as c,
    ):
        yield c


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real loopback port (uvicorn, this event loop); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await app.state.telecoder.bus.close()  # ends open streams, as `telecoder serve` does
        await asyncio.wait_for(task, 10)
        sock.close()


@dataclass
class SSE:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def sse(response: httpx.Response) -> AsyncIterator[SSE]:
    """Parse a text/event-stream response into events (comments and retry lines skipped)."""
    event, data, last_id = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SSE(event=event, data="\n".join(data), id=last_id)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                last_id = value


async def until(predicate: Callable[[], bool], *, seconds: float = 10) -> None:
    """Wait for ``predicate`` to hold (polling: what it watches sends no signal)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class FakeRun:
    """Plays a worker's part through the real queue: claim, append events, finish.

    Not a mock: the rows are written by the store's own queue, as a worker writes them.
    """

    def __init__(self, store: Store, claimed: Claimed) -> None:
        self.store = store
        self.claimed = claimed

    @classmethod
    async def start(cls, store: Store, worker: str = "test-worker") -> FakeRun:
        claimed = await store.queue.claim(worker)
        assert claimed is not None, "nothing to claim"
        return cls(store, claimed)

    @property
    def session_id(self) -> str:
        return self.claimed.session.id

    async def say(self, *texts: str) -> int:
        new = [NewEvent(kind=EventKind.OUTPUT, data={"stream": "stdout", "text": t}) for t in texts]
        return await self.store.events.append(self.session_id, new, self.claimed.lease)

    async def finish(self, status: SessionStatus = SessionStatus.SUCCEEDED) -> None:
        await self.store.queue.finish(self.claimed.lease, Outcome(status=status))
