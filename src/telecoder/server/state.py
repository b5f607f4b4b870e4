"""What one server holds: its settings, store, bus, guard, limiter, workers — and its seams.

Seams are plain callables passed to ``create_app``:

- ``Intake``: checks a new session before it is queued (repository exists and is git, engine
  known, base ref exists) and may normalise it. :func:`basic_intake` checks what it can without
  touching the repository; the shared validation of the CLI replaces it.
- ``WorkerRunner``: runs the embedded workers until the event it is given is set.
- ``DiffSource``: see :mod:`telecoder.server.diff`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telecoder import registry
from telecoder.bus import Bus
from telecoder.domain import NewSession
from telecoder.errors import EngineNotFound
from telecoder.server.auth import Guard
from telecoder.server.diff import DiffSource
from telecoder.server.limits import RateLimiter
from telecoder.settings import Settings
from telecoder.store import Store

Intake = Callable[[NewSession], Awaitable[NewSession]]
WorkerRunner = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def basic_intake(new: NewSession) -> NewSession:
    known = registry.names("engines")
    if new.engine not in known:
        raise EngineNotFound(f"unknown engine {new.engine!r} (known: {', '.join(known)})")
    return new


@dataclass
class Workers:
    """The embedded workers' task, if this server runs any."""

    runner: WorkerRunner | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def embedded(self) -> int:
        return 0 if self.runner is None else 1

    @property
    def alive(self) -> int:
        return int(self.task is not None and not self.task.done())


@dataclass
class ServerState:
    settings: Settings
    store: Store
    bus: Bus
    guard: Guard
    limiter: RateLimiter
    login_limiter: RateLimiter
    intake: Intake
    diff_source: DiffSource
    workers: Workers
