"""What an attempt records and why it stops: ``AttemptControl`` carries the reason an attempt
must stop early (cancel, timeout, stall, shutdown, lost lease), set by whoever notices first;
``EventRecorder`` collects the attempt's events and writes them in batches.

Every event is masked before it is kept (``Masker``: no secret value reaches the store), and an
attempt's output is bounded (``Quota``): past ``max_events`` events or ``max_bytes`` characters of
event text, the chatter (output lines, messages, thinking, tool calls and results) is dropped and
one ``output_truncated`` event says so; a last one gives the total dropped when the attempt ends.
Status, progress, errors, checks, usage and the result are never dropped: the session still ends
as it would have, and reads sensibly.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telecoder.domain import EventKind, Lease, NewEvent
from telecoder.errors import LeaseLost, StoreUnavailable
from telecoder.masking import Masker
from telecoder.store.events import Events

log = logging.getLogger(__name__)

FULL = 256  # events buffered that are written at once
MAX_TEXT = 64 * 1024  # longest string kept in one event; the rest is cut with a marker


# What a flood may drop; everything else tells how the session goes and is always kept.
DROPPABLE = frozenset(
    {
        EventKind.OUTPUT,
        EventKind.MESSAGE,
        EventKind.THINKING,
        EventKind.TOOL_CALL,
        EventKind.TOOL_RESULT,
        EventKind.WARNING,  # a CLI that warns at every step must not crowd out the rest
    }
)


@dataclass(frozen=True, slots=True)
class Quota:
    """How much one attempt may record before its chatter is dropped."""

    max_events: int = 20_000
    max_bytes: int = 64 * 1024 * 1024  # characters of event text, counted after clipping


class StopReason(enum.StrEnum):
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    TOO_LARGE = "too_large"  # the worktree grew past its cap
    BUDGET = "budget"  # the gateway found the session's budget spent
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


class AttemptControl:
    """Why the attempt must stop, set once by whoever notices first."""

    def __init__(self) -> None:
        self.reason: StopReason | None = None
        self._stopped = asyncio.Event()

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
            self._stopped.set()

    async def wait(self) -> StopReason:
        await self._stopped.wait()
        assert self.reason is not None
        return self.reason


class EventRecorder:
    """Collects events and writes them in batches, never holding a transaction in between.

    The flushing costs nothing while nothing comes, and no task of its own: the first event
    into an empty buffer puts the recorder on its worker's common tick (``_Tick``: one timer for
    every recorder of a store, on the next multiple of ``interval`` on the loop's clock, so no
    event waits longer than ``interval``; at once when ``FULL`` wait). When the tick fires, the
    batches of every recorder on it are written in one transaction (``Events.append_many``): a
    worker running 100 sessions that print writes ten times a second, not a hundred, and a line
    costs no wake-up of a task per session. An idle session has no timer; one batch of a
    recorder is written at a time, in order.
    """

    def __init__(
        self,
        events: Events,
        lease: Lease,
        *,
        interval: float = 0.1,
        masker: Masker | None = None,
        quota: Quota | None = None,
    ) -> None:
        self._events = events
        self._lease = lease
        self._interval = interval
        self.masker = masker or Masker()  # an attempt may add its repository's credentials
        self.quota = quota or Quota()
        self.recorded = 0  # events kept this attempt
        self.size = 0  # characters of their text
        self.checks: list[dict[str, Any]] = []  # the verify events' data, for the outcome
        self.dropped = 0
        self._announced = False  # the first output_truncated event is in
        self._summarized = False  # the final one is
        self._buffer: list[NewEvent] = []
        self._tick: _Tick | None = None  # while flushing in the background (``start``)
        self._control: AttemptControl | None = None
        self._soon = False  # on the tick: a write is scheduled
        self._writing: asyncio.Future[None] | None = None  # done when the batch in flight is

    def add(self, kind: EventKind, data: Mapping[str, Any]) -> None:
        if kind in DROPPABLE and self.recorded >= self.quota.max_events:
            self._drop("events")
            return
        clean, size = self._scrub(dict(data))
        if kind == EventKind.VERIFY:
            self.checks.append(clean)
        if kind in DROPPABLE and self.size + size > self.quota.max_bytes:
            self._drop("bytes")
            return
        self._keep(kind, clean, size)

    def _keep(self, kind: EventKind, data: dict[str, Any], size: int) -> None:
        self.recorded += 1
        self.size += size
        self._buffer.append(NewEvent(kind=kind, data=data, ts=time.time()))
        self._schedule()

    def _schedule(self) -> None:
        """Be on the next tick (at once when ``FULL`` wait) unless already on it, or writing."""
        if self._tick is None or self._writing is not None:
            return  # not flushing in the background; or ``_written`` schedules what came
        if len(self._buffer) >= FULL:
            self._soon = True
            self._tick.want(self, now=True)
        elif not self._soon:
            self._soon = True
            self._tick.want(self)

    def _take(self) -> list[NewEvent]:
        """The batch to write on this tick (the tick writes it, then calls ``_written``)."""
        self._soon = False
        if self._writing is not None or not self._buffer:
            return []
        batch, self._buffer = self._buffer, []
        self._writing = asyncio.get_running_loop().create_future()
        return batch

    def _written(self, batch: list[NewEvent], outcome: int | Exception) -> None:
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.set_result(None)
        if isinstance(outcome, StoreUnavailable):
            self._buffer[:0] = batch  # kept for the next try, on the next tick
            log.warning("session %s: cannot record events yet", self._lease.session_id)
        elif isinstance(outcome, LeaseLost):
            self._tick = None  # nothing more is written on a lease that is gone
            if self._control is not None:
                self._control.stop(StopReason.LEASE_LOST)
            return
        elif isinstance(outcome, Exception):
            self._tick = None
            log.warning("session %s: recording failed", self._lease.session_id, exc_info=outcome)
            return
        if self._buffer:
            self._schedule()

    def _scrub(self, value: Any) -> tuple[Any, int]:
        """``value`` masked, then clipped (so no cut can leave half a secret), and its size."""
        if isinstance(value, str):
            text = clip(self.masker.text(value))
            return text, len(text)
        if isinstance(value, dict):
            total, out = 0, {}
            for k, v in value.items():
                out[k], size = self._scrub(v)
                total += size
            return out, total
        if isinstance(value, list | tuple):
            total, items = 0, []
            for v in value:
                item, size = self._scrub(v)
                items.append(item)
                total += size
            return items, total
        return value, 0

    def _drop(self, limit: str) -> None:
        self.dropped += 1
        if self._announced:
            return
        self._announced = True
        quota = self.quota
        what = f"{quota.max_events} events" if limit == "events" else f"{quota.max_bytes} bytes"
        message = f"output truncated: this attempt recorded {what}; further output is dropped"
        self._truncated({"dropped": self.dropped, "limit": limit, "final": False}, message)

    def _truncated(self, data: dict[str, Any], message: str) -> None:
        self._keep(EventKind.OUTPUT_TRUNCATED, {**data, "message": message}, 0)

    def summarize(self) -> None:
        """Add the total dropped, once the attempt has ended (nothing when nothing was)."""
        if self.dropped and not self._summarized:
            self._summarized = True
            message = f"output truncated: {self.dropped} events were dropped in all"
            self._truncated({"dropped": self.dropped, "final": True}, message)

    def progress(self, step: str, **data: Any) -> None:
        self.add(EventKind.PROGRESS, {"step": step, **data})

    async def flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            await self._events.append_together(self._lease.session_id, batch, lease=self._lease)
        except StoreUnavailable:
            self._buffer[:0] = batch  # keep them for the next try
            raise

    def start(self, control: AttemptControl) -> None:
        """Write in the background from now on; a lost lease stops the attempt."""
        self._control = control
        self._tick = _Tick.of(self._events, self._interval)
        if self._buffer:
            self._schedule()

    async def cancel(self) -> None:
        """Stop the background flushing (idempotent); what is buffered stays unwritten.

        A write under way is let finish (for up to 30 s): cancelled half-way, it could leave
        its connection in a state the next user trips over.
        """
        tick, self._tick = self._tick, None
        if tick is not None:
            tick.forget(self)
        self._soon = False
        if self._writing is not None:
            await asyncio.wait({self._writing}, timeout=30.0)

    async def close(self) -> None:
        """Write everything: a flush in flight finishes first (cancelling it would lose its
        batch), then what is left is written."""
        await self.cancel()
        self.summarize()
        await self.flush()

    async def drain(self) -> list[NewEvent]:
        """Stop flushing and hand over what is buffered, to be written with the attempt's end."""
        await self.cancel()
        self.summarize()
        batch, self._buffer = self._buffer, []
        return batch


class _Tick:
    """The common tick of the recorders of one store (and interval) on one loop: one timer for
    all of them, their batches written in one transaction by one task."""

    def __init__(self, events: Events, interval: float) -> None:
        self.events = events
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.due: dict[EventRecorder, None] = {}  # an ordered set
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, events: Events, interval: float) -> _Tick:
        ticks = _TICKS.setdefault(asyncio.get_running_loop(), {})
        tick = ticks.get((id(events), interval))
        if tick is None or tick.events is not events:
            tick = ticks[(id(events), interval)] = cls(events, interval)
        return tick

    def want(self, recorder: EventRecorder, *, now: bool = False) -> None:
        self.due[recorder] = None
        if now:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_soon(self._fire)
        elif self.timer is None:
            tick = (math.floor(self.loop.time() / self.interval) + 1) * self.interval
            self.timer = self.loop.call_at(tick, self._fire)

    def forget(self, recorder: EventRecorder) -> None:
        self.due.pop(recorder, None)
        if not self.due and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fire(self) -> None:
        self.timer = None
        due, self.due = self.due, {}
        batches = [(r, batch) for r in due if (batch := r._take())]
        if batches:
            task = self.loop.create_task(self._write(batches))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, batches: list[tuple[EventRecorder, list[NewEvent]]]) -> None:
        appends = [(r._lease.session_id, batch, r._lease) for r, batch in batches]
        try:
            outcomes = await self.events.append_many(appends)
        except Exception as e:
            outcomes = [e] * len(batches)
        for (recorder, batch), outcome in zip(batches, outcomes, strict=True):
            recorder._written(batch, outcome)


# Each loop's ticks, by (id of the store's Events, interval).
_TICKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, float], _Tick]] = (
    weakref.WeakKeyDictionary()
)


async def settle(task: asyncio.Task[Any], *, grace: float) -> None:
    """Wait for ``task``, already told to stop, to end; cancel it after ``grace`` seconds.

    Whatever it ended with is consumed here: the caller only needs it gone.
    """
    await asyncio.wait({task}, timeout=grace)
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and (error := task.exception()) is not None:
        log.debug("a side task ended with %r", error)


def decode(raw: bytes) -> str:
    """Text of an output line: invalid UTF-8 kept as escapes, NUL made visible."""
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + f"… [{len(value) - MAX_TEXT} more characters]"
    if isinstance(value, dict):
        return {k: clip(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clip(v) for v in value]
    return value
