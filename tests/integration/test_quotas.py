"""Quotas against floods: an agent printing 300,000 lines writes a bounded number of rows, says
once that its output was cut (and, at the end, how much), and still finishes normally."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo

LINES = 300_000


def rows(home: Path, session_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "telecoder.db") as db:
        found = db.execute(
            "SELECT kind, data FROM events WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()
    return [(str(kind), str(data)) for kind, data in found]


def test_a_flood_of_output_is_capped_and_the_session_finishes(git_repo: GitRepo, home: Path):
    cap = 2_000
    done = telecoder(
        "run", f"yes | head -n {LINES}; echo done > flood.txt", "--repo", str(git_repo.path),
        "--engine", "shell", "--json",
        env=cli_env(home, TELECODER_MAX_EVENTS=str(cap)), timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "succeeded"
    assert session["result"]["type"] == "branch"  # the work after the flood still counted

    events = rows(home, session["id"])
    kinds = [kind for kind, _ in events]
    assert cap <= len(events) <= cap + 20  # the cap, plus what is never dropped
    truncated = [json.loads(data) for kind, data in events if kind == "output_truncated"]
    assert [t["final"] for t in truncated] == [False, True]
    recorded_output = kinds.count("output")
    assert truncated[1]["dropped"] == LINES - recorded_output
    assert truncated[0]["limit"] == "events"
    # Nothing important was dropped: the pipeline's steps after the flood are all there.
    steps = [json.loads(data).get("step") for kind, data in events if kind == "progress"]
    assert "committing" in steps
    assert "pushed" in steps
    assert kinds[-1] in ("result", "status")


def test_a_byte_quota_cuts_long_lines_too(git_repo: GitRepo, home: Path):
    done = telecoder(
        "run", "for i in $(seq 200); do printf '%01000d\\n' $i; done", "--repo",
        str(git_repo.path), "--engine", "shell", "--json",
        env=cli_env(home, TELECODER_MAX_EVENT_BYTES=str(64 * 1024)), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    events = rows(home, session["id"])
    outputs = [data for kind, data in events if kind == "output"]
    assert 50 <= len(outputs) <= 66  # 64 KiB of 1,000-character lines
    truncated = [json.loads(data) for kind, data in events if kind == "output_truncated"]
    assert truncated[0]["limit"] == "bytes"
    assert truncated[-1] == {**truncated[-1], "final": True, "dropped": 200 - len(outputs)}
