"""What one server holds: its settings, store, bus, guard, limiter, workers — and its seams.

Seams are plain callables passed to ``create_app``:

- ``Intake``: checks a request before it is queued (repository exists and is git, engine known,
  base ref exists) and makes the session of it; by default :func:`telecoder.intake.accept`, the
  same check the CLI makes.
- ``WorkerRunner``: runs the embedded workers until the event it is given is set.
- ``DiffSource``: see :mod:`telecoder.server.diff`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telecoder import engine_choice, registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.background import Background
from telecoder.bus import Bus
from telecoder.conversation import Conversations
from telecoder.deliverer import Deliverer
from telecoder.intake import Accepted, Request, accept
from telecoder.server.auth import Guard
from telecoder.server.diff import DiffSource
from telecoder.server.limits import RateLimiter
from telecoder.settings import Settings
from telecoder.store import PauseState, Store
from telecoder.upkeep import Upkeep

Intake = Callable[[Request], Awaitable[Accepted]]
WorkerRunner = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def default_intake(settings: Settings, store: Store | None = None) -> Intake:
    """With ``store``: an engine that cannot run on this host is refused unless a live worker
    advertises it."""
    workspace = build_workspace(settings)
    forges = build_forges(settings)
    fleet = None if store is None else engine_choice.Fleet(store, settings)

    async def check(request: Request) -> Accepted:
        engines = registry.names("engines")
        return await accept(
            request,
            settings=settings,
            workspace=workspace,
            engines=engines,
            forges=forges,
            fleet=fleet,
        )

    return check


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


PAUSE_REFRESH_SECONDS = 2.0


async def watch_pause(state: ServerState, stop: asyncio.Event) -> None:
    """Keep ``state.pause`` current until ``stop`` is set."""
    while not stop.is_set():
        # The database down: /api/health says so; the last state is kept.
        with contextlib.suppress(Exception):
            state.pause = await state.store.control.pause_state()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PAUSE_REFRESH_SECONDS)


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
    deliverer: Deliverer | None = None  # sends the outbox (notifications to subscriptions)
    conversations: Conversations | None = None  # channel messages -> sessions, replies back
    upkeep: Upkeep | None = None  # judging and idle chats for the remote workers' sessions
    # Claims paused? Read from the database every PAUSE_REFRESH_SECONDS (any host may pause)
    # and at once by this server's own pause/resume; the dashboard's header shows it.
    pause: PauseState = field(default_factory=lambda: PauseState(paused=False))
    # Replies and status comments a webhook starts and does not wait for; settled at shutdown.
    background: Background = field(default_factory=Background)
