"""Every benchmark runs (issue 16): each script in benchmarks/, with ``--quick`` (small N, a few
seconds), exits 0 and prints its figures. A benchmark nobody runs rots; this one runs in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_the_benchmark_runs_quick_and_prints_figures(script: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,  # not the repository: nothing in it may shadow a module
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip(), f"{script.name} printed nothing"
    assert any(c.isdigit() for c in done.stdout), done.stdout
