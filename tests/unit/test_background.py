"""Background work: kept until it ends, its failure logged; at shutdown awaited, then cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from telecoder.background import Background
from telecoder.errors import BadInput


async def test_settle_awaits_quick_work_and_cancels_what_outlives_the_grace():
    work = Background()
    ended: list[str] = []
    cancelled = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.05)
        ended.append("quick")

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    work.start(quick(), "quick")
    work.start(slow(), "slow")
    started = asyncio.get_running_loop().time()
    await work.settle(grace=0.3)
    took = asyncio.get_running_loop().time() - started
    assert ended == ["quick"]
    assert cancelled.is_set()
    assert 0.3 <= took < 2.0
    assert not asyncio.all_tasks() - {asyncio.current_task()}  # nothing left pending


async def test_settle_with_nothing_under_way_returns_at_once():
    started = asyncio.get_running_loop().time()
    await Background().settle(grace=10)
    assert asyncio.get_running_loop().time() - started < 0.1


async def test_a_failure_is_logged_never_raised(caplog: pytest.LogCaptureFixture):
    work = Background("Slack")

    async def refused() -> None:
        raise BadInput("no such channel")

    async def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="telecoder.background"):
        work.start(refused(), "a reply")
        work.start(broken(), "a report")
        await work.settle(grace=1)
    messages = [r.getMessage() for r in caplog.records]
    assert "Slack: a reply failed: no such channel" in messages
    assert "Slack: a report failed" in messages
