"""Raw logs: every line kept per attempt, capped, read back in order, removed after retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telecoder import rawlog
from tests.conftest import shared_bits


def write(root: Path, session: str, attempt: int, run: int, *lines: tuple[str, str]) -> Path:
    file = rawlog.path(root, session, attempt)
    log = rawlog.RawLog(file, run=run)
    for stream, text in lines:
        log.line(stream, text)
    log.close()
    return file


def test_every_line_is_kept_per_attempt_and_run_in_order(tmp_path: Path) -> None:
    write(tmp_path, "s1", 2, 0, ("stdout", "second attempt"))
    write(tmp_path, "s1", 1, 0, ("stdout", '{"type":"unmapped"}'), ("stderr", "warn: ünïcode"))
    write(tmp_path, "s1", 1, 1, ("stdout", "the revision"))
    write(tmp_path, "s2", 1, 0, ("stdout", "another session"))
    records = list(rawlog.read(tmp_path, "s1"))
    seen = [(r["attempt"], r.get("run"), r.get("stream"), r.get("line")) for r in records]
    assert seen == [
        (1, 0, None, None),
        (1, None, "stdout", '{"type":"unmapped"}'),
        (1, None, "stderr", "warn: ünïcode"),
        (1, 1, None, None),
        (1, None, "stdout", "the revision"),
        (2, 0, None, None),
        (2, None, "stdout", "second attempt"),
    ]
    assert [r.get("line") for r in rawlog.read(tmp_path, "s1", attempt=2)] == [
        None,
        "second attempt",
    ]
    assert list(rawlog.read(tmp_path, "nobody")) == []


@pytest.mark.usefixtures("loose_umask")
def test_logs_are_for_telecoders_user_alone(tmp_path: Path) -> None:
    log = rawlog.RawLog(rawlog.path(tmp_path / "logs", "s1", 1), run=0)
    log.line("stdout", "a secret, maybe")
    log.close()
    assert shared_bits(tmp_path / "logs") == {}


def test_a_log_stops_growing_at_its_cap(tmp_path: Path) -> None:
    file = rawlog.path(tmp_path, "s", 1)
    log = rawlog.RawLog(file, run=0, max_bytes=2000)
    for i in range(100):
        log.line("stdout", f"line {i} " + "x" * 40)
    log.close()
    assert file.stat().st_size < 2000 + 100
    records = list(rawlog.read(tmp_path, "s"))
    assert records[-1]["truncated"] == 2000
    kept = [r["line"] for r in records if "line" in r]
    assert 10 < len(kept) < 100
    assert kept == [f"line {i} " + "x" * 40 for i in range(len(kept))]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    file = write(tmp_path, "s", 1, 0, ("stdout", "whole"))
    with file.open("a") as f:
        f.write('{"t": 1, "stream": "stdout", "li')
    assert [r.get("line") for r in rawlog.read(tmp_path, "s")] == [None, "whole"]


def test_sweep_removes_only_logs_past_retention(tmp_path: Path) -> None:
    old = write(tmp_path, "old", 1, 0, ("stdout", "a"))
    mixed_old = write(tmp_path, "mixed", 1, 0, ("stdout", "b"))
    write(tmp_path, "mixed", 2, 0, ("stdout", "c"))
    write(tmp_path, "new", 1, 0, ("stdout", "d"))
    now = old.stat().st_mtime + 1000
    for file in (old, mixed_old):
        os.utime(file, (now - 500, now - 500))
    for file in (rawlog.path(tmp_path, "mixed", 2), rawlog.path(tmp_path, "new", 1)):
        os.utime(file, (now - 10, now - 10))
    assert rawlog.sweep(tmp_path, keep_seconds=100, now=now) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed", "new"]
    assert rawlog.sweep(tmp_path, keep_seconds=0, now=now) == ["mixed", "new"]
    assert list(tmp_path.iterdir()) == []
    assert rawlog.sweep(tmp_path / "missing", keep_seconds=0) == []
