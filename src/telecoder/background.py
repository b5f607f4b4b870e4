"""Work started now and finished later (a reply, a status comment): kept until it ends, its
failure logged and never raised into whoever started it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from telecoder.errors import TeleCoderError

log = logging.getLogger(__name__)


class Background:
    def __init__(self, label: str = "") -> None:
        self.label = f"{label}: " if label else ""
        self._tasks: set[asyncio.Task[None]] = set()  # a task nobody holds may be collected

    def start(self, work: Coroutine[Any, Any, object], what: str) -> None:
        """Run ``work``; a TeleCoderError is a warning with its message, others a traceback."""

        async def run() -> None:
            try:
                await work
            except TeleCoderError as e:
                log.warning("%s%s failed: %s", self.label, what, e.message)
            except Exception:
                log.exception("%s%s failed", self.label, what)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the work under way, then cancel what is left and
        await it: work left pending when its loop closes drops its pooled connection."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
