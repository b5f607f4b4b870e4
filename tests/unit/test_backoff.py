"""The shared backoff: Retry-After parsing, waiting, and the gradual release after it."""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import formatdate

import pytest

from telecoder.gateway.backoff import (
    CAP_SECONDS,
    OPEN_AFTER,
    Backoff,
    Backoffs,
    Expired,
    exponential,
    retry_after,
)


class Headers(dict[str, str]):
    def get(self, key, default=None):  # case-insensitive, like httpx.Headers
        return super().get(key.lower(), default)


def test_retry_after_seconds_ms_and_date():
    now = 1_000_000.0
    assert retry_after(Headers({"retry-after": "2"}), now=now) == 2.0
    assert retry_after(Headers({"retry-after": " 1.5 "}), now=now) == 1.5
    assert retry_after(Headers({"retry-after-ms": "250", "retry-after": "9"}), now=now) == 0.25
    date = formatdate(now + 30, usegmt=True)
    assert retry_after(Headers({"retry-after": date}), now=now) == pytest.approx(30, abs=1)
    assert retry_after(Headers({"retry-after": formatdate(now - 30, usegmt=True)}), now=now) == 0
    assert retry_after(Headers({"retry-after": "-3"}), now=now) == 0
    assert retry_after(Headers({"retry-after": "soon"}), now=now) is None
    assert retry_after(Headers({}), now=now) is None
    assert retry_after(Headers({"retry-after": "99999999"}), now=now) == 3600


def test_exponential_grows_is_jittered_and_capped():
    rng = random.Random(7)
    delays = [exponential(n, rng) for n in range(1, 12)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert all(CAP_SECONDS / 2 <= d <= CAP_SECONDS for d in delays[7:])
    assert len({round(exponential(3, rng), 6) for _ in range(20)}) > 1


async def test_an_open_endpoint_does_not_wait():
    backoff = Backoff("a")
    started = time.monotonic()
    turn = await backoff.wait()
    assert not turn.probe
    assert await turn.answered(200, Headers()) is None
    assert time.monotonic() - started < 0.05


async def test_a_limit_closes_the_endpoint_for_every_request():
    backoff = Backoff("a")
    turn = await backoff.wait()
    until = await turn.answered(429, Headers({"retry-after": "0.4"}))
    assert until == pytest.approx(time.time() + 0.4, abs=0.05)
    assert backoff.closed
    started = time.monotonic()
    turn = await backoff.wait()
    assert time.monotonic() - started >= 0.35
    assert turn.probe
    await turn.answered(200, Headers())


async def test_a_deadline_before_the_end_fails_at_once():
    backoff = Backoff("a")
    await backoff.limited(5.0)
    started = time.monotonic()
    with pytest.raises(Expired) as caught:
        await backoff.wait(deadline=time.time() + 1.0)
    assert time.monotonic() - started < 0.05
    assert caught.value.until == backoff.until


async def test_after_a_backoff_one_probe_goes_first_then_the_window_doubles():
    backoff = Backoff("a")
    await backoff.limited(0.2)
    started: list[float] = []
    release = asyncio.Event()

    async def request() -> None:
        async with backoff.turn() as turn:
            started.append(time.monotonic())
            await release.wait()
            await asyncio.sleep(0.02)
            await turn.answered(200, Headers())

    tasks = [asyncio.create_task(request()) for _ in range(10)]
    await asyncio.sleep(0.35)
    assert len(started) == 1  # the probe, alone, while it has no answer
    release.set()
    await asyncio.gather(*tasks)
    assert len(started) == 10
    # Rounds of 1, 2, 4, ... requests: each round starts after the one before answered.
    rounds = sorted(started)
    assert rounds[1] - rounds[0] >= 0.015
    assert rounds[3] - rounds[1] >= 0.015
    assert not backoff.recovering or backoff._recovery.successes < OPEN_AFTER


async def test_a_probe_limited_again_lets_nobody_else_go():
    backoff = Backoff("a")
    await backoff.limited(0.15)
    seen: list[float] = []
    answers = iter([429] + [200] * 20)

    async def request() -> None:
        async with backoff.turn() as turn:
            seen.append(time.monotonic())
            await asyncio.sleep(0.01)
            status = next(answers)
            await turn.answered(status, Headers({"retry-after": "0.3"}))

    begin = time.monotonic()
    await asyncio.gather(*(request() for _ in range(5)))
    offsets = sorted(s - begin for s in seen)
    assert offsets[0] == pytest.approx(0.15, abs=0.06)
    # The probe was limited for 0.3 s more: the others waited for that, not for the first end.
    assert all(o >= 0.15 + 0.3 - 0.02 for o in offsets[1:])


async def test_a_turn_left_unreported_goes_to_the_next_in_line():
    backoff = Backoff("a")
    await backoff.limited(0.05)

    async def crashing() -> None:
        async with backoff.turn():
            raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError):
        await crashing()
    turn = await asyncio.wait_for(backoff.wait(), 0.5)
    assert turn.probe


async def test_backoffs_adopt_other_hosts_times():
    backoffs = Backoffs()
    now = time.time()
    await backoffs.adopt({"a": now + 5, "b": now - 5, "c": None})
    assert set(backoffs.until()) == {"a"}
    assert backoffs.of("a").closed
    await backoffs.of("a").adopt(now + 1)  # earlier: no change
    assert backoffs.of("a").until == pytest.approx(now + 5)
