"""Cron jobs on the real things: the app's scheduler firing a job, two schedulers on one
database firing each slot once, a scheduler back from downtime firing once, a job pausing
itself after three failed runs (the shell engine's ``exit 1`` run by a real worker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from telecoder.assemble import build_worker
from telecoder.cli.jobs import cli_intake
from telecoder.domain import RunStatus
from telecoder.scheduler import Scheduler
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from telecoder.store.schema import job_slots
from tests.conftest import GitRepo
from tests.server import client


def add_job(settings: Settings, name: str, text: str) -> None:
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    (settings.jobs_dir / f"{name}.yaml").write_text(text)


def shell_job(repo: GitRepo, schedule: str, command: str = "echo tick >> README.md") -> str:
    return f"schedule: '{schedule}'\nrepos: ['{repo.path}']\nengine: shell\nprompt: '{command}'\n"


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"jobs_poll_seconds": 0.05, "max_attempts": 1})


async def test_an_every_second_job_fires_its_first_run_within_two_seconds(
    fast: Settings, store: Store, git_repo: GitRepo
) -> None:
    add_job(fast, "tick", shell_job(git_repo, "@every 1s"))
    app = create_app(fast, store, start_workers=build_worker(fast, store).run)
    async with client(app) as c:
        started = time.monotonic()
        while not (runs := await store.runs.list(job="tick")):
            assert time.monotonic() - started < 2.0, "no run within 2 s"
            await asyncio.sleep(0.05)
        first = runs[-1]
        assert first.job == "tick"
        sessions = await store.runs.sessions(first.id)
        assert [s.task_key for s in sessions] == [str(git_repo.path)]
        assert sessions[0].origin is not None
        assert sessions[0].origin["job"] == "tick"
        while (await store.runs.get(first.id)).status == RunStatus.RUNNING:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert (await store.runs.get(first.id)).status == RunStatus.SUCCEEDED
        listed = (await c.get("/api/jobs")).json()
        assert listed[0]["name"] == "tick"
        assert listed[0]["status"] == "active"
        assert listed[0]["last_run"]["id"] in {r.id for r in await store.runs.list(job="tick")}
        assert listed[0]["next_run"] > time.time() - 1
        page = await c.get("/jobs")
        assert page.status_code == 200
        assert "tick" in page.text
        assert 'href="/jobs"' in page.text


async def slot_rows(store: Store, job: str) -> int:
    async with store.db.read() as conn:
        query = select(func.count()).select_from(job_slots).where(job_slots.c.job == job)
        return int((await conn.execute(query)).scalar_one())


async def test_two_schedulers_on_one_database_fire_each_slot_exactly_once(
    settings: Settings, db_url: str, git_repo: GitRepo
) -> None:
    add_job(settings, "twice", shell_job(git_repo, "@every 60s"))
    one = await open_store(db_url, lease_seconds=5)
    two = await open_store(db_url, lease_seconds=5)
    try:
        a = Scheduler(one, settings, cli_intake(settings))
        b = Scheduler(two, settings, cli_intake(settings))
        await one.jobs.ensure("twice")
        start = (time.time() // 60 + 1) * 60
        fired = []
        for k in range(10):  # ten slots; each scheduler ticks three times in each, at once
            for offset in (0.0, 1.0, 30.0):
                now = start + k * 60 + offset
                made = await asyncio.gather(a.tick(now), b.tick(now), a.tick(now), b.tick(now))
                fired.extend(run for runs in made for run in runs)
        assert len(fired) == 10
        runs = await one.runs.list(job="twice", limit=100)
        assert len(runs) == 10
        assert {r.spec["slot"] for r in runs} == {start + k * 60 for k in range(10)}
        assert await slot_rows(one, "twice") == 10
    finally:
        await one.close()
        await two.close()


async def test_a_scheduler_down_for_five_slots_fires_once_on_return(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    add_job(settings, "nightly", shell_job(git_repo, "@every 60s"))
    scheduler = Scheduler(store, settings, cli_intake(settings))
    await store.jobs.ensure("nightly")
    start = (time.time() // 60 + 1) * 60
    assert len(await scheduler.tick(start + 1)) == 1
    # Down for five slots; back 20 s into the sixth.
    back = start + 5 * 60 + 20
    fired = await scheduler.tick(back)
    assert [r.spec["slot"] for r in fired] == [start + 5 * 60]
    assert await scheduler.tick(back + 10) == []
    assert len(await store.runs.list(job="nightly")) == 2


async def test_three_failed_runs_pause_the_job_and_it_says_so(
    fast: Settings, store: Store, git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    add_job(fast, "flaky", shell_job(git_repo, "@every 60s", command="exit 1"))
    scheduler = Scheduler(store, fast, cli_intake(fast))
    await store.jobs.ensure("flaky")
    stop = asyncio.Event()
    worker = asyncio.create_task(build_worker(fast, store).run(stop))
    try:
        start = (time.time() // 60 + 1) * 60
        for k in range(3):
            [run] = await scheduler.tick(start + k * 60)
            while (await store.runs.get(run.id)).status == RunStatus.RUNNING:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert (await store.runs.get(run.id)).status == RunStatus.FAILED
        assert await scheduler.tick(start + 3 * 60) == []  # counted, paused: no fourth run
    finally:
        stop.set()
        await worker
    state = await store.jobs.get("flaky")
    assert state is not None
    assert state.paused
    assert state.failures == 3
    assert state.paused_reason is not None
    assert "3 consecutive failed runs" in state.paused_reason
    assert any("paused itself" in r.getMessage() for r in caplog.records)
    assert len(await store.runs.list(job="flaky")) == 3
    # Resumed: failures forgotten, it fires again.
    await store.jobs.resume("flaky")
    resumed = await store.jobs.get("flaky")
    assert resumed is not None
    assert (resumed.paused, resumed.failures, resumed.paused_reason) == (False, 0, None)
    assert len(await scheduler.tick(start + 4 * 60)) == 1


async def test_a_firing_refused_before_a_run_counts_as_a_failure(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    add_job(settings, "gone", f"schedule: '@every 60s'\nrepos: ['{tmp_path / 'nope'}']\n"
            "prompt: do it\n")  # fmt: skip
    scheduler = Scheduler(store, settings, cli_intake(settings))
    await store.jobs.ensure("gone")
    start = (time.time() // 60 + 1) * 60
    assert await scheduler.tick(start) == []
    assert await scheduler.tick(start + 1) == []  # the slot is spent: not retried every tick
    state = await store.jobs.get("gone")
    assert state is not None
    assert state.failures == 1
    assert await slot_rows(store, "gone") == 1
