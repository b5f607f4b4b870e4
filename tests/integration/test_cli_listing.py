"""`telecoder list` pages like the API; tables never cut an id or a status and are plain text in
a pipe; `telecoder workers` hides workers long dead unless --all (--live: only those up)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from telecoder.settings import Settings
from telecoder.store import open_store
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo


def test_list_pages_with_a_cursor_and_prints_plain_rows_in_a_pipe(home: Path, git_repo: GitRepo):
    env = cli_env(home, COLUMNS="40")  # narrower than the table
    made = []
    for n in range(3):
        done = telecoder(
            "run", f"echo {n}", "--repo", str(git_repo.path), "--engine", "shell", "--detach",
            env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        made.append(done.stdout.strip())
    first = json.loads(telecoder("list", "--json", "--limit", "2", env=env).stdout)
    assert [s["id"] for s in first["sessions"]] == made[:0:-1]
    assert first["next_cursor"]
    rest = telecoder("list", "--json", "--limit", "2", "--cursor", first["next_cursor"], env=env)
    assert json.loads(rest.stdout)["next_cursor"] is None  # the last page
    assert [s["id"] for s in json.loads(rest.stdout)["sessions"]] == made[:1]

    table = telecoder("list", "--limit", "2", env=env)
    lines = table.stdout.splitlines()
    assert lines[0].split("\t") == ["ID", "STATUS", "ENGINE", "AGE", "REPO", "PROMPT", "RESULT"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[1]) for r in rows] == [(made[2], "queued"), (made[1], "queued")]
    assert "--cursor" in table.stderr  # where the next page starts


async def test_workers_hides_the_long_dead_unless_all(home: Path):
    settings = Settings(home=home)
    store = await open_store(settings.store_url)
    try:
        for name in ("up-worker-0001", "gone-an-hour-ago", "gone-a-minute-ago"):
            await store.workers.register(name, host="h", pid=1, capacity=1, engines=["shell"])
    finally:
        await store.close()
    with sqlite3.connect(home / "telecoder.db") as db:
        db.execute(
            "UPDATE workers SET last_heartbeat = ? WHERE id = 'gone-an-hour-ago'",
            (time.time() - 2 * 3600,),
        )
        db.execute(
            "UPDATE workers SET last_heartbeat = ? WHERE id = 'gone-a-minute-ago'",
            (time.time() - 60,),
        )
    env = cli_env(home, COLUMNS="30")

    def ids(*args: str) -> set[str]:
        done = telecoder("workers", "--json", *args, env=env)
        assert done.returncode == 0, done.stderr
        return {w["id"] for w in json.loads(done.stdout)}

    assert ids() == {"up-worker-0001", "gone-a-minute-ago"}
    assert ids("--all") == {"up-worker-0001", "gone-a-minute-ago", "gone-an-hour-ago"}
    assert ids("--live") == {"up-worker-0001"}
    piped = telecoder("workers", "--all", env=env).stdout.splitlines()
    assert piped[0].split("\t")[:2] == ["ID", "STATE"]
    assert sorted(tuple(line.split("\t")[:2]) for line in piped[1:]) == [
        ("gone-a-minute-ago", "offline"),
        ("gone-an-hour-ago", "offline"),
        ("up-worker-0001", "idle"),
    ]


def test_a_narrow_terminal_cuts_other_columns_never_an_id_or_a_status():
    from rich.console import Console

    from telecoder.cli.output import sessions_table
    from telecoder.domain import SessionStatus
    from tests.factories import make_session

    session = make_session(
        id="k3x9v2m8q1", status=SessionStatus.SUCCEEDED, prompt="add a test " * 20
    )
    console = Console(width=40, record=True, force_terminal=True)
    console.print(sessions_table([session]))
    text = console.export_text()
    assert "k3x9v2m8q1" in text
    assert "succeeded" in text
