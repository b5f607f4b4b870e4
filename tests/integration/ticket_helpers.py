"""What the Linear and Jira tests share: an agent that makes a real change each turn, waiting
for the store, posting a signed webhook to the app on its real port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from telecoder import registry
from telecoder.domain import Session
from telecoder.engines.shell import ShellEngine
from telecoder.protocols import EngineCommand, EngineTask
from telecoder.store import Store
from tests.server import serving

PUBLIC = "https://telecoder.example"


class TicketFixEngine(ShellEngine):
    """An agent that appends a line to the README on every turn, whatever it is told."""

    name = "test-ticket-fix"

    def command(self, task: EngineTask) -> EngineCommand:
        script = "echo 'fixed by telecoder' >> README.md\necho 'Appended a line to README.md.'\n"
        return EngineCommand(argv=["/bin/sh", str(task.home / "fix.sh")], files={"fix.sh": script})


@pytest.fixture(name="fix_engine")
def fix_engine_fixture() -> Iterator[str]:
    remove = registry.register("engines", TicketFixEngine.name, TicketFixEngine)
    yield TicketFixEngine.name
    remove()


async def post(
    http: httpx.AsyncClient, channel: str, signed: tuple[bytes, dict[str, str]]
) -> httpx.Response:
    body, headers = signed
    return await http.post(f"/api/channels/{channel}/webhook", content=body, headers=headers)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 (the store sends no signal)
            await asyncio.sleep(0.05)


async def session_when(
    store: Store, session_id: str, status: str, attempt: int = 1, seconds: float = 90
) -> Session:
    """The session once it is in ``status`` at ``attempt``."""
    found: list[Session] = []

    async def there() -> bool:
        session = await store.sessions.get(session_id)
        found[:] = [session]
        assert session.status.value not in ("failed", "dead"), session.error
        return session.status.value == status and session.attempt == attempt

    await eventually(there, seconds)
    return found[0]


async def all_sessions(store: Store) -> list[Session]:
    return list((await store.sessions.list(limit=100)).sessions)


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real port, and a client for it."""
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http
