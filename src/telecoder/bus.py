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
``Last-Event-ID`` and replays from the store.

When the reader looks: every event append sends a notice at commit (one per session and
transaction). Appends of this process reach the bus at once (``Database.subscribe``). On SQLite
other processes are polled for every ``poll_seconds`` (25 ms). On PostgreSQL the bus keeps a
``Listener`` (a LISTEN connection of its own): while it is connected, a notice wakes the reader,
which then reads only the sessions named, and a full look every ``fallback_seconds`` (1 s)
covers a lost notice; while it is down, the reader polls every ``poll_seconds`` again.

A notice that carries its events (``Notice.body``: all but the largest appends) is fanned out as
it is heard, with no query: append -> stream is the notice's trip plus the writes. Only when
they follow on what was fanned out (a notice lost, or a bare one, leaves a gap: the reader then
reads the session); a status event also has the reader look, for the session's end.

How late: the bus keeps two ``Lateness`` figures, event append -> fanned out to the watchers'
queues (``fanned``, once per event) and append -> frame written to a stream's socket
(``written``, once per live frame, stamped by the SSE route); the server logs them at shutdown.
They are the server's part of append -> arrival: whatever a client adds is the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from telecoder.domain import Event, EventKind
from telecoder.store import Notice, NoticeKind, Store
from telecoder.store.events import events_carried
from telecoder.store.notify import CHANNEL, EVENTS_CHANNEL

log = logging.getLogger(__name__)

_BATCH = 500  # events fetched per session per tick
_REPLAY_PAGE = 1000


class Lateness:
    """How late events are, in 1 ms bins up to 10 s: cheap enough to count every frame."""

    _TOP = 10_000

    def __init__(self) -> None:
        self.bins = [0] * (self._TOP + 1)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.bins[min(max(int(seconds * 1000), 0), self._TOP)] += 1
        self.count += 1

    def pct(self, q: float) -> float:
        """The ``q``-th percentile in ms (the upper edge of its bin); nan when empty."""
        if not self.count:
            return float("nan")
        rank = min(self.count - 1, int(q / 100 * self.count))
        seen = 0
        for ms, n in enumerate(self.bins):
            seen += n
            if seen > rank:
                return float(ms + 1)
        return float(self._TOP)  # pragma: no cover - the bins hold every count

    def summary(self) -> str:
        return f"p50 {self.pct(50):.0f} ms, p99 {self.pct(99):.0f} ms ({self.count})"


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
        self._page: deque[Event] = deque()  # replayed events not yet returned
        self._replaying = True
        self._replayed = False  # the last replay page has been read
        self._ended = False

    @property
    def last_seq(self) -> int:
        return self._last

    @property
    def live(self) -> bool:
        """Past the replay: events now come from the bus as they are appended."""
        return not self._replaying

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while True:
                try:
                    event = await self.next()
                except StopAsyncIteration:
                    return
                if event is not None:
                    yield event
        finally:
            self.close()

    async def next(self, quiet_seconds: float | None = None) -> Event | None:
        """The next event: replayed, then live; None after ``quiet_seconds`` of quiet (live);
        StopAsyncIteration at the end. Waits on the watcher's queue itself, no task per event:
        with 1,000 streams the cost of an event stays a queue get per stream."""
        while self._replaying:
            if self._page:
                event = self._page.popleft()
                self._last = event.seq
                return event
            if self._replayed:
                self._replaying = False
                break
            page = await self._bus.store.events.list(
                self._session_id, after=self._last, limit=_REPLAY_PAGE
            )
            self._replayed = len(page) < _REPLAY_PAGE
            self._page.extend(page)
        if self._ended:
            raise StopAsyncIteration
        queue = self._watcher.queue
        while True:
            if not queue.empty():
                item = queue.get_nowait()
            elif quiet_seconds is None:
                item = await queue.get()
            else:
                try:
                    async with asyncio.timeout(quiet_seconds):
                        item = await queue.get()
                except TimeoutError:
                    return None
            if isinstance(item, _End):
                self.interrupted = self._watcher.cut
                self._ended = True
                self.close()
                raise StopAsyncIteration
            if item.seq <= self._last:
                continue
            self._last = item.seq
            return item

    def close(self) -> None:
        self._bus._unwatch(self._session_id, self._watcher)


class Bus:
    """Started and closed by its owner (the server's lifespan); ``poke`` wakes the reader."""

    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float = 0.025,
        fallback_seconds: float = 1.0,
        listen: bool = True,
        max_backlog: int = 10_000,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.fallback_seconds = fallback_seconds
        self.listen = listen
        self.max_backlog = max_backlog
        self._watched: dict[str, _Watched] = {}
        self._list_watchers: set[asyncio.Queue[float]] = set()
        self._wake = asyncio.Event()
        self._full = True  # the next look reads every watched session, not only those named
        self._named: set[str] = set()  # sessions with new events, from notices
        self._listening = False  # a LISTEN connection is up: notices tell what changed
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._last_change: tuple[int, float] | None = None
        self.ticks = 0  # how many times the reader has looked (a figure for tests and benchmarks)
        self.full_ticks = 0  # ... of which read every watched session
        self.fanned = Lateness()  # append -> in the watchers' queues, per live event
        self.written = Lateness()  # append -> written to a stream, per live frame (the route's)

    # --- lifecycle ---

    def start(self) -> None:
        if self._tasks:
            return
        self._unsubscribe = self.store.db.subscribe(self._on_notice)
        self._tasks.append(asyncio.create_task(self._run(), name="telecoder-bus"))
        listener = self.listen and self.store.listener(
            self._on_notice,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            channels=(CHANNEL, EVENTS_CHANNEL),
            name="telecoder-bus",
        )
        if listener:
            task = asyncio.create_task(listener.run(), name="telecoder-bus-listen")
            task.add_done_callback(lambda _: self._on_disconnect())  # poll again without it
            self._tasks.append(task)

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening = False
        for watched in self._watched.values():
            for watcher in watched.watchers:
                watcher.cut = True
                _offer(watcher, _END)
        self._watched.clear()

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    @property
    def listening(self) -> bool:
        """Woken by PostgreSQL notices (and polling only every ``fallback_seconds``)."""
        return self._listening

    def poke(self) -> None:
        """Look now, at every session, instead of at the next tick (after a write made in this
        process)."""
        self._full = True
        self._wake.set()

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind == NoticeKind.EVENTS:
            watched = self._watched.get(notice.session_id)
            if watched is not None and not self._carry(notice, watched):
                self._named.add(notice.session_id)
                self._wake.set()
            elif self._list_watchers:
                self._wake.set()
        elif self._list_watchers:  # a session was queued or asked to stop
            self._wake.set()

    def _carry(self, notice: Notice, watched: _Watched) -> bool:
        """Fan out the events ``notice`` carries; False when the reader must look instead (no
        events carried, a gap before them, or a status change: the session may have ended)."""
        found = events_carried(notice.session_id, notice.body) if notice.body else None
        if not found or found[0].seq > watched.delivered + 1:
            return False
        self._deliver(watched, found, time.time())
        return not any(e.kind == EventKind.STATUS for e in found)

    def _deliver(self, watched: _Watched, found: list[Event], now: float) -> None:
        """Events of one session in seq order to its watchers (those already sent skipped)."""
        for event in found:
            if event.seq <= watched.delivered:
                continue
            watched.delivered = event.seq
            self.fanned.add(now - event.ts)
            for watcher in list(watched.watchers):
                if not _offer(watcher, event, self.max_backlog):
                    watched.watchers.discard(watcher)

    def _on_connect(self) -> None:
        self._listening = True
        self.poke()  # notices sent while not listening are lost: look at everything once

    def _on_disconnect(self) -> None:
        self._listening = False

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
        self._named.add(session_id)  # a look at this session (every one, when polling)
        self._wake.set()
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
        loop = asyncio.get_running_loop()
        next_full = 0.0
        while True:
            # Cleared before the look: a notice that arrives during it wakes the next one.
            self._wake.clear()
            full = self._full or not self._listening or loop.time() >= next_full
            named, self._named, self._full = self._named, set(), False
            try:
                await self._tick(None if full else named)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database blinked: keep serving, try again next tick
                log.exception("live event reader failed; retrying")
                self._full = True
                await asyncio.sleep(1.0)
            if full:
                next_full = loop.time() + self.fallback_seconds
            wait = max(0.0, next_full - loop.time()) if self._listening else self.poll_seconds
            # asyncio.timeout, not wait_for: on 3.11 wait_for can turn a cancel into a timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _tick(self, named: set[str] | None) -> None:
        """Look at every watched session (``named`` None) or at those named."""
        if not self._watched and not self._list_watchers:
            return
        self.ticks += 1
        if named is None:
            self.full_ticks += 1
            asked = list(self._watched)
        else:
            asked = [sid for sid in named if sid in self._watched]
        if asked:
            await self._fan_out(asked)
        if self._list_watchers:
            change = await self.store.events.last_change()
            if change != self._last_change:
                self._last_change = change
                for queue in list(self._list_watchers):
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(change[1])

    async def _fan_out(self, asked: list[str]) -> None:
        # Watchers may join while the queries run: judge the sessions asked about only.
        heads = await self.store.events.heads(asked)
        wanted: dict[str, tuple[int, int]] = {}
        for sid, head in heads.items():
            watched = self._watched.get(sid)
            if watched is not None and head.last_seq > watched.delivered:
                wanted[sid] = (watched.delivered, min(head.last_seq, watched.delivered + _BATCH))
        found = await self.store.events.since(wanted)
        now = time.time()
        for event in found:  # in (session, seq) order
            watched = self._watched.get(event.session_id)
            if watched is not None:
                self._deliver(watched, [event], now)
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
