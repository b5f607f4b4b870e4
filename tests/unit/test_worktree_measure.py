"""How often a running agent's worktree is measured against its cap: every 5 s while measuring
is cheap, less often as it costs more (a worker's measures together stay near 5 % of a core),
never less than every 2 minutes."""

from __future__ import annotations

import time
from pathlib import Path

from telecoder.agentrun import (
    WORKTREE_CHECK_MAX_SECONDS,
    WORKTREE_CHECK_SECONDS,
    measure_worktree,
    next_measure,
)


def test_a_cheap_measure_is_repeated_every_five_seconds() -> None:
    assert next_measure(0.0005, 100) == WORKTREE_CHECK_SECONDS
    assert next_measure(0.01, 2) == WORKTREE_CHECK_SECONDS


def test_a_costly_measure_waits_so_a_full_worker_spends_a_twentieth_of_a_core() -> None:
    pause = next_measure(0.01, 100)  # 100 worktrees of ~1,000 files
    assert pause == 20.0
    assert 100 * 0.01 / pause == 0.05
    assert next_measure(0.02, 100) == 2 * pause  # twice the cost, half as often


def test_the_pause_has_a_ceiling() -> None:
    assert next_measure(0.2, 100) == WORKTREE_CHECK_MAX_SECONDS


def test_the_measure_gives_the_size_and_its_cpu_time(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10)
    started = time.thread_time()
    size, took = measure_worktree(tmp_path, 1 << 30)
    assert size == 2000
    assert 0 < took <= time.thread_time() - started
