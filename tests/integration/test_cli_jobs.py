"""``telecoder jobs``, ``telecoder templates`` and ``telecoder run --template`` as a user runs
them (subprocesses, a real git repository with a bare remote); two ``telecoder worker``
processes on one PostgreSQL database firing a job."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

from telecoder.store import open_store
from tests.cli import TELECODER, cli_env, telecoder, wait_for
from tests.conftest import GitRepo
from tests.integration.test_jobs import slot_rows


def test_templates_list_show_and_run_with_a_template(git_repo: GitRepo, home: Path) -> None:
    env = cli_env(home)
    (home / "templates").mkdir()
    (home / "templates" / "stamp.yaml").write_text(
        "description: Append a word to the README.\n"
        "prompt: 'echo {{ word }} >> README.md'\n"
        "vars: {word: {required: true}}\n"
        "engine: shell\n"
    )
    listed = telecoder("templates", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {t["name"]: t for t in json.loads(listed.stdout)}
    assert rows["dependency-upgrade"]["builtin"] is True  # shipped
    assert rows["dependency-upgrade"]["vars"]["package"]["required"] is True
    assert rows["stamp"]["builtin"] is False
    shown = telecoder("templates", "show", "stamp", "--json", env=env)
    assert json.loads(shown.stdout)["prompt"] == "echo {{ word }} >> README.md"
    assert telecoder("templates", "show", "nope", env=env).returncode == 3

    done = telecoder(
        "run", "--template", "stamp", "--var", "word=templated", "--repo", str(git_repo.path),
        "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "succeeded"
    assert session["engine"] == "shell"  # the template's
    readme = git_repo.remote_git("show", f"{session['branch']}:README.md")
    assert readme.endswith("templated")

    missing = telecoder("run", "--template", "stamp", "--repo", str(git_repo.path), env=env)
    assert missing.returncode == 2
    assert "needs the variable 'word'" in missing.stderr
    both = telecoder("run", "x", "--template", "stamp", "--repo", str(git_repo.path), env=env)
    assert both.returncode == 2
    assert "not both" in both.stderr


def test_jobs_add_list_run_pause_resume_remove(git_repo: GitRepo, home: Path) -> None:
    env = cli_env(home)
    added = telecoder(
        "jobs", "add", "upgrade", "--schedule", "30 2 * * *", "--timezone", "Europe/Berlin",
        "--repo", str(git_repo.path), "--template", "dependency-upgrade",
        "--var", "package=lodash", "--var", "version=4.17.21", "--engine", "shell", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "next run" in added.stderr
    again = telecoder("jobs", "add", "upgrade", "--schedule", "@daily", "--repo", "x",
                      "--prompt", "p", env=env)  # fmt: skip
    assert again.returncode == 2
    bad = telecoder("jobs", "add", "bad", "--schedule", "@often", "--repo", "x",
                    "--prompt", "p", env=env)  # fmt: skip
    assert bad.returncode == 2
    assert "@often" in bad.stderr
    unrendered = telecoder("jobs", "add", "nopkg", "--schedule", "@daily", "--repo", "x",
                           "--template", "dependency-upgrade", env=env)  # fmt: skip
    assert unrendered.returncode == 2
    assert "'package'" in unrendered.stderr

    listed = telecoder("jobs", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["status"], row["last_run"]) == ("upgrade", "active", None)
    assert row["timezone"] == "Europe/Berlin"
    assert row["vars"] == {"package": "lodash", "version": "4.17.21"}
    assert row["next_run"] > 0

    fired = telecoder("jobs", "run", "upgrade", "--json", env=env)
    assert fired.returncode == 0, fired.stderr
    run = json.loads(fired.stdout)
    assert run["job"] == "upgrade"
    assert [s["task_key"] for s in run["sessions"]] == [str(git_repo.path)]
    assert [s["status"] for s in run["sessions"]] == ["queued"]
    shown = json.loads(telecoder("jobs", "show", "upgrade", "--json", env=env).stdout)
    assert shown["last_run"]["id"] == run["id"]

    paused = telecoder("jobs", "pause", "upgrade", "--reason", "holiday", "--json", env=env)
    assert json.loads(paused.stdout)["status"] == "paused"
    table = telecoder("jobs", "list", env=env)
    assert "paused: holiday" in table.stdout
    resumed = telecoder("jobs", "resume", "upgrade", "--json", env=env)
    assert json.loads(resumed.stdout)["status"] == "active"

    assert telecoder("jobs", "remove", "upgrade", env=env).returncode == 0
    assert json.loads(telecoder("jobs", "list", "--json", env=env).stdout) == []
    definition = home / "weekly.yaml"
    definition.write_text(f"schedule: '@weekly'\nrepos: ['{git_repo.path}']\nprompt: tidy up\n")
    from_file = telecoder("jobs", "add", "weekly", "-f", str(definition), env=env)
    assert from_file.returncode == 0, from_file.stderr
    (row,) = json.loads(telecoder("jobs", "list", "--json", env=env).stdout)
    assert (row["name"], row["schedule"], row["prompt"]) == ("weekly", "@weekly", "tidy up")
    assert telecoder("jobs", "show", "upgrade", env=env).returncode == 3
    assert telecoder("jobs", "run", "upgrade", env=env).returncode == 3


def test_two_worker_processes_on_postgresql_fire_each_slot_once(
    git_repo: GitRepo, home: Path, pg_url: str
) -> None:
    env = cli_env(
        home,
        TELECODER_DATABASE_URL=pg_url,
        TELECODER_JOBS_POLL_SECONDS="0.05",
        # The workers fire the job but run none of its sessions (keeps the test light).
        TELECODER_WORKER_ENGINES="claude-code",
    )
    (home / "jobs").mkdir()
    (home / "jobs" / "often.yaml").write_text(
        f"schedule: '@every 0.5s'\nrepos: ['{git_repo.path}']\nengine: shell\nprompt: 'true'\n"
    )

    async def counts() -> tuple[int, int, int]:
        store = await open_store(pg_url)
        try:
            runs = await store.runs.list(job="often", limit=1000)
            slots = {r.spec["slot"] for r in runs}
            return len(runs), len(slots), await slot_rows(store, "often")
        finally:
            await store.close()

    procs = [
        subprocess.Popen(
            [TELECODER, "worker"],
            env={**env, "TELECODER_WORKER_ID": name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for name in ("w1", "w2")
    ]
    try:
        wait_for(lambda: asyncio.run(counts())[0] >= 4, timeout=30, what="four firings")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(20)
    runs, slots, rows = asyncio.run(counts())
    assert runs == slots == rows
    shown = json.loads(telecoder("jobs", "show", "often", "--json", env=env).stdout)
    assert shown["last_run"] is not None
