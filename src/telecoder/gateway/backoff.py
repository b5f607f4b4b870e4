"""One shared backoff per endpoint, honouring ``Retry-After``.

A 429, 503 or 529 from an endpoint sets its "not before" time: from ``Retry-After`` (seconds or
an HTTP-date; ``retry-after-ms`` too) or, without one, a jittered exponential delay (capped).
Every request to that endpoint, from any session, waits for it. When it passes, requests are let
go gradually, like TCP's slow start: one probe first; each success lets two more go (so the
number in flight doubles per round trip) until a few have succeeded and the endpoint is open
again. A probe that is rate-limited again sets a new backoff and nobody else has gone: no
thundering herd.

The time is wall-clock (``time.time``) so it can be shared: the gateway writes it to
``endpoints.backoff_until`` and adopts what other hosts wrote (:meth:`Backoff.adopt`).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

# What an endpoint answers when it wants us to slow down (529: Anthropic's "overloaded").
RATE_LIMITED = frozenset({429, 503, 529})

BASE_SECONDS = 1.0  # the first delay without Retry-After; doubles with each limit in a row
CAP_SECONDS = 60.0  # the longest delay chosen without Retry-After
RETRY_AFTER_CAP_SECONDS = 3600.0  # a Retry-After beyond this is read as this
OPEN_AFTER = 8  # successes after a backoff before requests go freely again


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the upstream asks us to wait, or None when it does not say.

    Reads ``retry-after-ms`` (OpenAI, Anthropic), then ``retry-after`` as seconds or as an
    HTTP-date. ``headers`` must look names up case-insensitively (httpx's do)."""
    now = time.time() if now is None else now
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return _clamp(float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return _clamp(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _clamp(when.timestamp() - now)


def _clamp(seconds: float) -> float | None:
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP_SECONDS)


def exponential(limits_in_a_row: int, rng: random.Random | None = None) -> float:
    """The delay after the ``limits_in_a_row``-th limit without Retry-After: base·2^(n-1),
    capped, with "equal jitter" (half fixed, half random) so hosts do not retry in step."""
    raw = min(CAP_SECONDS, BASE_SECONDS * 2 ** max(0, limits_in_a_row - 1))
    return float(raw / 2 + (rng or random).uniform(0, raw / 2))


class Expired(Exception):
    """The endpoint stays closed past the caller's deadline."""

    def __init__(self, until: float) -> None:
        super().__init__(f"backing off until {until:.3f}")
        self.until = until


@dataclass
class _Recovery:
    permits: int = 1  # requests that may start now
    successes: int = 0


class Backoff:
    """The backoff of one endpoint, shared by every request this process sends to it."""

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.until = 0.0  # no request before this (wall-clock seconds)
        self.limits_in_a_row = 0
        self.clock = clock
        self._rng = rng
        self._recovery: _Recovery | None = None
        self._changed = asyncio.Condition()

    @property
    def closed(self) -> bool:
        return self.clock() < self.until

    @property
    def recovering(self) -> bool:
        return self._recovery is not None

    async def wait(self, deadline: float | None = None) -> Turn:
        """Wait for this request's turn. Raises Expired when the endpoint will not take it
        before ``deadline`` (wall-clock seconds), without waiting for nothing.

        Report how the turn went (:meth:`Turn.answered`, :meth:`Turn.failed`), or use
        :meth:`turn`, which reports a turn left unreported as failed."""
        async with self._changed:
            while True:
                now = self.clock()
                if now < self.until:
                    if deadline is not None and self.until > deadline:
                        raise Expired(self.until)
                    await self._sleep(self.until - now)
                    continue
                recovery = self._recovery
                if recovery is None:
                    return Turn(self, None)
                if recovery.permits > 0:
                    recovery.permits -= 1
                    return Turn(self, recovery)
                if deadline is not None and now >= deadline:
                    raise Expired(self.until)
                await self._sleep(None if deadline is None else deadline - now)

    async def _sleep(self, seconds: float | None) -> None:
        """Wait for a change (the lock held), at most ``seconds``."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    @asynccontextmanager
    async def turn(self, deadline: float | None = None) -> AsyncIterator[Turn]:
        """``wait`` as a context: a turn not reported by its end counts as failed."""
        turn = await self.wait(deadline)
        try:
            yield turn
        finally:
            if not turn.reported:
                await turn.failed()

    async def _ok(self, recovery: _Recovery | None) -> None:
        self.limits_in_a_row = 0
        if recovery is None or recovery is not self._recovery:
            return  # a turn from before the latest limit: it proves nothing about now
        async with self._changed:
            if recovery is not self._recovery:
                return
            recovery.successes += 1
            recovery.permits += 2  # its own turn back, and one more: the window doubles
            if recovery.successes >= OPEN_AFTER:
                self._recovery = None
            self._changed.notify_all()

    async def _failed(self, recovery: _Recovery | None) -> None:
        if recovery is None or recovery is not self._recovery:
            return
        async with self._changed:
            if recovery is self._recovery:
                recovery.permits += 1  # the turn goes back to the next in line
                self._changed.notify_all()

    async def limited(self, delay: float | None) -> float:
        """The endpoint answered a rate limit asking for ``delay`` seconds (None: it did not
        say). Returns the new "not before" time."""
        self.limits_in_a_row += 1
        if delay is None:
            delay = exponential(self.limits_in_a_row, self._rng)
        return await self.adopt(self.clock() + delay)

    async def adopt(self, until: float) -> float:
        """Close the endpoint until ``until`` (another host's backoff, or our own). A time
        earlier than the current one changes nothing."""
        async with self._changed:
            if until > self.until:
                self.until = until
                self._recovery = _Recovery()
                self._changed.notify_all()
            return self.until


class Turn:
    """One request's turn at an endpoint: report how it went, once."""

    def __init__(self, backoff: Backoff, recovery: _Recovery | None) -> None:
        self.backoff = backoff
        self._recovery = recovery
        self.reported = False

    @property
    def probe(self) -> bool:
        """This request goes while the endpoint recovers from a backoff."""
        return self._recovery is not None

    async def answered(self, status: int, headers: Mapping[str, str]) -> float | None:
        """The endpoint answered ``status``: for a rate limit, the backoff is set and its end
        returned; for anything else, None (a success for the backoff: it was not limited)."""
        self.reported = True
        if status in RATE_LIMITED:
            return await self.backoff.limited(retry_after(headers, now=self.backoff.clock()))
        await self.backoff._ok(self._recovery)
        return None

    async def failed(self) -> None:
        """No answer (refused, reset, timed out): the turn goes back to the next in line."""
        self.reported = True
        await self.backoff._failed(self._recovery)


class Backoffs:
    """The backoff of every endpoint, by name: one per process, shared by all sessions."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, rng: random.Random | None = None
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._all: dict[str, Backoff] = {}

    def of(self, endpoint: str) -> Backoff:
        found = self._all.get(endpoint)
        if found is None:
            found = self._all[endpoint] = Backoff(endpoint, clock=self._clock, rng=self._rng)
        return found

    def until(self) -> dict[str, float]:
        """The endpoints closed now, with the time each opens."""
        now = self._clock()
        return {name: b.until for name, b in self._all.items() if b.until > now}

    async def adopt(self, until: Mapping[str, float | None]) -> None:
        """Take in backoffs other hosts wrote (``endpoints.backoff_until``)."""
        now = self._clock()
        for name, when in until.items():
            if when is not None and when > now:
                await self.of(name).adopt(when)
