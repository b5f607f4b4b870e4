"""Live fan-out of session events: one reader for the store, any number of watchers.

A watcher ``subscribe``s to a session from a seq. It first replays what the store already has,
then receives what the bus's reader finds: the reader asks the store, once per tick, for the
heads (last seq, status) of every watched session and fetches the new events of the sessions
that moved in one query, whatever the number of watchers — 100 watchers of one session cost one
reader, not 100. A watcher's stream ends after the last event of a finished session.

Correctness of replay-then-tail: a watcher registers its queue *before* it replays, so every
event is in the replay, in the queue, or in both (the watcher drops what it has already seen by
seq). Within a session, events commit in seq order (the store serialises writers on the session
row), so reading ``seq > delivered`` never skips one that commits late.

A watcher that falls far behind, or is still watching when the bus closes, is cut off: its
stream ends marked ``interrupted`` (not finished), and an SSE client reconnects with
``Last-Event-ID`` and replays from the store. Across hosts (PostgreSQL), the
reader still polls; LISTEN/NOTIFY could wake it sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from telecoder.domain import Event
from telecoder.store import Store

log = logging.getLogger(__name__)

_BATCH = 500  # events fetched per session per tick
_REPLAY_PAGE = 1000


class _End:
    """Put in a queue after a finished session's last event."""


_END = _End()


@dataclass(eq=False)
class _Watcher:
    queue: asyncio.Queue[Event | _End]
    cut: bool = False


@dataclass
class _Watched:
    delivered: int  # the reader has fanned out every event up to this seq
    watchers: set[_Watcher] = field(default_factory=set)


class Subscription:
    """Events of one session from a seq on, replayed then live. Iterate it; close it when done."""

    def __init__(self, bus: Bus, session_id: str, after: int, watcher: _Watcher) -> None:
        self._bus = bus
        self._session_id = session_id
        self._last = after
        self._watcher = watcher
        self.interrupted = False  # ended by lag or shutdown, not by the session finishing

    @property
    def last_seq(self) -> int:
        return self._last

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while True:
                page = await self._bus.store.events.list(
                    self._session_id, after=self._last, limit=_REPLAY_PAGE
                )
                for event in page:
                    self._last = event.seq
                    yield event
                if len(page) < _REPLAY_PAGE:
                    break
            while True:
                item = await self._watcher.queue.get()
                if isinstance(item, _End):
                    self.interrupted = self._watcher.cut
                    return
                if item.seq <= self._last:
                    continue
                self._last = item.seq
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._bus._unwatch(self._session_id, self._watcher)


class Bus:
    """Started and closed by its owner (the server's lifespan); ``poke`` wakes the reader."""

    def __init__(
        self, store: Store, *, poll_seconds: float = 0.025, max_backlog: int = 10_000
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.max_backlog = max_backlog
        self._watched: dict[str, _Watched] = {}
        self._list_watchers: set[asyncio.Queue[float]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_change: tuple[int, float] | None = None
        self.ticks = 0  # how many times the reader has looked (a figure for tests and benchmarks)

    # --- lifecycle ---

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telecoder-bus")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watched in self._watched.values():
            for watcher in watched.watchers:
                watcher.cut = True
                _offer(watcher, _END)
        self._watched.clear()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def poke(self) -> None:
        """Look now instead of at the next tick (after a write made in this process)."""
        self._wake.set()

    # --- watchers ---

    async def subscribe(self, session_id: str, *, after: int = 0) -> Subscription:
        """Watch ``session_id`` from ``after``; the caller has checked the session exists."""
        watcher = _Watcher(asyncio.Queue())
        watched = self._watched.get(session_id)
        if watched is None:
            heads = await self.store.events.heads([session_id])
            head = heads.get(session_id)
            # Re-check: another watcher may have registered while we were reading.
            watched = self._watched.get(session_id)
            if watched is None:
                watched = _Watched(delivered=head.last_seq if head else 0)
                self._watched[session_id] = watched
        watched.watchers.add(watcher)
        self.poke()
        return Subscription(self, session_id, after, watcher)

    @contextlib.asynccontextmanager
    async def session_changes(self) -> AsyncIterator[asyncio.Queue[float]]:
        """A queue that receives a value whenever any session is created or changes state."""
        queue: asyncio.Queue[float] = asyncio.Queue(maxsize=1)
        self._list_watchers.add(queue)
        self.poke()
        try:
            yield queue
        finally:
            self._list_watchers.discard(queue)

    @property
    def watcher_count(self) -> int:
        return sum(len(w.watchers) for w in self._watched.values())

    def _unwatch(self, session_id: str, watcher: _Watcher) -> None:
        watched = self._watched.get(session_id)
        if watched is None:
            return
        watched.watchers.discard(watcher)
        if not watched.watchers:
            del self._watched[session_id]

    # --- the reader ---

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database blinked: keep serving, try again next tick
                log.exception("live event reader failed; retrying")
                await asyncio.sleep(1.0)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can turn a cancel into a timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    async def _tick(self) -> None:
        if not self._watched and not self._list_watchers:
            return
        self.ticks += 1
        if self._watched:
            await self._fan_out()
        if self._list_watchers:
            change = await self.store.events.last_change()
            if change != self._last_change:
                self._last_change = change
                for queue in list(self._list_watchers):
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(change[1])

    async def _fan_out(self) -> None:
        asked = list(self._watched)  # watchers may join while the queries run: judge these only
        heads = await self.store.events.heads(asked)
        wanted: dict[str, tuple[int, int]] = {}
        for sid, head in heads.items():
            watched = self._watched.get(sid)
            if watched is not None and head.last_seq > watched.delivered:
                wanted[sid] = (watched.delivered, min(head.last_seq, watched.delivered + _BATCH))
        for event in await self.store.events.since(wanted):
            watched = self._watched.get(event.session_id)
            if watched is None or event.seq <= watched.delivered:
                continue
            watched.delivered = event.seq
            for watcher in list(watched.watchers):
                if not _offer(watcher, event, self.max_backlog):
                    watched.watchers.discard(watcher)
        for sid, head in heads.items():
            watched = self._watched.get(sid)
            if watched is not None and head.status.terminal and watched.delivered >= head.last_seq:
                for watcher in watched.watchers:
                    _offer(watcher, _END)
                del self._watched[sid]
        for sid in set(asked) - set(heads):  # deleted under us
            gone = self._watched.pop(sid, None)
            for watcher in gone.watchers if gone is not None else ():
                _offer(watcher, _END)


def _offer(watcher: _Watcher, item: Event | _End, max_backlog: int | None = None) -> bool:
    """Queue ``item``; a watcher too far behind is ended instead (it will replay)."""
    if max_backlog is not None and watcher.queue.qsize() >= max_backlog:
        watcher.cut = True
        watcher.queue.put_nowait(_END)
        return False
    watcher.queue.put_nowait(item)
    return True
