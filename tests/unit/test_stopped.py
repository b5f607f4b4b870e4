"""An attempt's stop signal survives the context managers it passes through."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from telecoder.endings import Stopped
from telecoder.recorder import StopReason


@contextlib.contextmanager
def _around() -> Iterator[None]:
    yield


@contextlib.asynccontextmanager
async def _around_async() -> AsyncIterator[None]:
    yield


def test_stopped_passes_through_a_context_manager_unchanged() -> None:
    # A frozen slots dataclass here made contextlib's traceback assignment raise TypeError, so
    # a cancelled or shut-down attempt ended `failed` instead of `released`.
    with pytest.raises(Stopped) as caught, _around():
        raise Stopped(StopReason.CANCELLED)
    assert caught.value.reason is StopReason.CANCELLED


async def test_stopped_passes_through_an_async_context_manager_unchanged() -> None:
    with pytest.raises(Stopped) as caught:
        async with _around_async():
            raise Stopped(StopReason.TIMEOUT)
    assert caught.value.reason is StopReason.TIMEOUT
