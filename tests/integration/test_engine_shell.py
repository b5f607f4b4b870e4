"""The shell engine end to end: Worker → Pipeline → LocalRuntime → git, on both store backends."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import update

from telecoder.assemble import build_worker
from telecoder.domain import (
    AttemptStatus,
    Event,
    EventKind,
    FailureKind,
    NewSession,
    ResultType,
    Session,
    SessionStatus,
)
from telecoder.recorder import MAX_TEXT
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.store.schema import sessions
from telecoder.worker import Worker
from tests.conftest import GitRepo
from tests.processes import with_marker


def tuned(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"kill_grace_seconds": 1.0, **changes})


def request(repo: GitRepo, prompt: str, **kw: Any) -> NewSession:
    return NewSession(repo=str(repo.path), prompt=prompt, engine="shell", **kw)


async def execute(worker: Worker, store: Store, new: NewSession, within: float = 30) -> Session:
    await store.sessions.create(new)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    assert claimed.session.id == new.id
    async with asyncio.timeout(within):
        done = await worker.execute(claimed)
    assert done is not None
    assert done == await store.sessions.get(new.id)
    return done


async def all_events(store: Store, session_id: str) -> list[Event]:
    found: list[Event] = []
    while batch := await store.events.list(session_id, after=found[-1].seq if found else 0):
        found.extend(batch)
    return found


def outputs(events: Sequence[Event], stream: str = "stdout") -> list[str]:
    return [
        e.data["text"]
        for e in events
        if e.kind == EventKind.OUTPUT and e.data.get("stream") == stream
    ]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


async def wait_for_output(store: Store, session_id: str, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 10
    while len(lines := outputs(await all_events(store, session_id))) < count:
        assert time.monotonic() < deadline, "the engine printed nothing"
        await asyncio.sleep(0.02)
    return lines


def mark() -> str:
    """A duration for ``sleep`` no other process runs: how its process is found."""
    return f"30.{time.time_ns() % 10**9:09d}"


async def assert_gone(marker: str) -> None:
    """No process runs ``marker`` any more (within 3 s)."""
    deadline = time.monotonic() + 3
    while left := with_marker(marker):
        assert time.monotonic() < deadline, f"still running: {left}"
        await asyncio.sleep(0.02)


async def test_a_change_becomes_one_pushed_commit(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = request(git_repo, "sed -i 's/colour/color/' README.md && echo edited")
    done = await execute(worker, store, new)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.type == ResultType.BRANCH
    assert done.result.branch == f"telecoder/{new.id}"
    sha = done.result.commit
    assert sha is not None
    assert (done.result.diff.files_changed, done.result.diff.insertions) == (1, 1)
    assert git_repo.remote_git("rev-parse", done.result.branch) == sha
    assert git_repo.remote_git("rev-list", "--count", f"main..{sha}") == "1"
    assert git_repo.remote_git("show", f"{sha}:README.md") == "The color of magic."
    assert git_repo.remote_git("log", "-1", "--format=%s", sha) == new.prompt
    # The user's checkout is as it was; the worktree and the engine's home are gone.
    assert (git_repo.path / "README.md").read_text() == "The colour of magic.\n"
    assert git_repo.git("status", "--porcelain") == ""
    assert not (settings.worktrees / f"{new.id}-1").exists()  # pooled or removed
    assert not (settings.engine_homes / new.id).exists()
    [attempt] = await store.sessions.attempts(new.id)
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert (attempt.commit_sha, attempt.pushed_sha) == (sha, sha)
    assert attempt.workspace_path == str(settings.worktrees / f"{new.id}-1")
    assert attempt.base_sha == git_repo.remote_git("rev-parse", "main")
    events = await all_events(store, new.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    steps = [e.data["step"] for e in events if e.kind == EventKind.PROGRESS]
    assert steps == [
        "preparing_workspace",
        "workspace_ready",
        "engine_started",
        "committing",
        "scanning_for_secrets",
        "pushing",
        "pushed",
    ]
    assert outputs(events) == ["edited"]
    assert [e.kind for e in events[-2:]] == [EventKind.RESULT, EventKind.STATUS]
    assert events[-1].data == {"status": "succeeded"}


async def test_a_prompt_over_the_128_kib_argument_limit_runs(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    """Under the API's 100,000 characters but 270 KB of UTF-8: more than Linux takes in one
    argument (MAX_ARG_STRLEN), so it must not reach the command line."""
    comment = "€" * 45_000
    new = request(git_repo, f"# {comment}\nprintf '%s\\n' '{comment}' > euro.txt\necho done")
    assert len(new.prompt) < 100_000 < 128 * 1024 < len(new.prompt.encode())
    done = await execute(build_worker(tuned(settings), store), store, new)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.commit is not None
    assert git_repo.remote_git("show", f"{done.result.commit}:euro.txt") == comment
    assert outputs(await all_events(store, new.id)) == ["done"]


async def test_echo_only_is_a_text_answer(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = request(git_repo, "echo hello; echo world")
    done = await execute(worker, store, new)
    assert done.status == SessionStatus.SUCCEEDED
    assert done.result is not None
    assert (done.result.type, done.result.text) == (ResultType.TEXT, "hello\nworld")
    assert (done.result.branch, done.result.commit) == (None, None)
    assert git_repo.remote_git("branch", "--list", "telecoder/*") == ""


async def test_a_failing_command_fails_with_its_stderr(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    new = request(git_repo, "echo partial; echo 'sed: no such file' >&2; exit 3")
    done = await execute(worker, store, new)
    assert done.status == SessionStatus.FAILED
    assert done.failure_kind == FailureKind.ENGINE_ERROR
    assert done.error is not None
    assert "status 3" in done.error
    assert "sed: no such file" in done.error
    [attempt] = await store.sessions.attempts(new.id)
    assert (attempt.status, attempt.failure_kind) == (
        AttemptStatus.FAILED,
        FailureKind.ENGINE_ERROR,
    )
    assert outputs(await all_events(store, new.id), "stderr") == ["sed: no such file"]


async def test_binary_garbage_and_a_10_mb_line_are_recorded_safely(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    big = 10 << 20
    prompt = (
        "head -c 200000 /dev/urandom; echo; "
        f"{sys.executable} -c \"import sys; sys.stdout.write('y' * {big} + '\\n')\"; "
        "printf 'nul\\000byte \\377 end\\n'"
    )
    done = await execute(worker, store, request(git_repo, prompt))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.type == ResultType.TEXT
    assert done.result.text is not None
    assert len(done.result.text) <= MAX_TEXT + 100
    events = await all_events(store, done.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    lines = outputs(events)
    assert lines[-1] == "nul\\x00byte \\xff end"
    [long_line] = [line for line in lines if line.startswith("yyyy")]
    assert long_line == "y" * MAX_TEXT + f"… [{big - MAX_TEXT} more characters]"
    for event in events:
        for text in strings(event.data):
            assert "\x00" not in text
            assert len(text) <= MAX_TEXT + 100
    json.dumps(done.to_dict())


async def test_timeout_fails_and_kills_the_process_group(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    marker = mark()
    # The limit leaves a loaded machine time to start the shell and print both pids.
    new = request(git_repo, f"echo $$; setsid sleep {marker} & echo $!; wait", timeout_seconds=3.0)
    started = time.monotonic()
    done = await execute(worker, store, new)
    assert 3.0 <= time.monotonic() - started < 8
    assert done.status == SessionStatus.FAILED
    assert done.failure_kind == FailureKind.TIMEOUT
    assert done.error is not None
    assert "time limit" in done.error
    pids = [int(line) for line in outputs(await all_events(store, new.id))]
    assert len(pids) == 2
    await assert_gone(marker)


async def test_stall_watchdog_stops_a_silent_agent(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings, stall_seconds=0.5), store)
    marker = mark()
    new = request(git_repo, f"echo $$; sleep {marker}", max_attempts=2)
    started = time.monotonic()
    done = await execute(worker, store, new)
    assert time.monotonic() - started < 5
    # A stall is transient: the session waits for its next try; the attempt failed as stalled.
    assert done.status == SessionStatus.QUEUED
    assert done.failure_kind == FailureKind.STALLED
    assert done.available_at > time.time()
    [attempt] = await store.sessions.attempts(new.id)
    assert (attempt.status, attempt.failure_kind) == (AttemptStatus.FAILED, FailureKind.STALLED)
    assert len(outputs(await all_events(store, new.id))) == 1
    await assert_gone(marker)


async def test_cancel_stops_a_running_session_within_a_heartbeat(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    marker = mark()
    new = request(git_repo, f"echo $$; exec sleep {marker}")
    await store.sessions.create(new)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    running = asyncio.create_task(worker.execute(claimed))
    await wait_for_output(store, new.id)
    cancelled_at = time.monotonic()
    await store.sessions.cancel(new.id)
    while (await store.sessions.get(new.id)).status == SessionStatus.RUNNING:
        assert time.monotonic() - cancelled_at < settings.heartbeat_seconds + 1.0
        await asyncio.sleep(0.02)
    async with asyncio.timeout(10):
        done = await running
    assert done is not None
    assert done.status == SessionStatus.CANCELLED
    assert done.failure_kind == FailureKind.CANCELLED
    await assert_gone(marker)
    [attempt] = await store.sessions.attempts(new.id)
    assert attempt.status == AttemptStatus.CANCELLED


async def test_a_worker_that_lost_its_lease_writes_nothing_more(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings), store)
    marker = "0.0" + mark().replace(".", "")
    new = request(git_repo, f"echo $$; while :; do sleep {marker}; echo tick; done")
    await store.sessions.create(new)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    running = asyncio.create_task(worker.execute(claimed))
    await wait_for_output(store, new.id)
    # The lease runs out (as if the worker had hung) and the session is recovered. The worker's
    # heartbeat may renew the lease between the two steps on a busy machine: then again.
    deadline = time.monotonic() + 10
    while True:
        async with store.db.write() as conn:
            expire = update(sessions).where(sessions.c.id == new.id).values(lease_until=0)
            await conn.execute(expire)
        if await store.queue.recover_expired() == [new.id]:
            break
        assert time.monotonic() < deadline, "the lease never stayed expired"
    async with asyncio.timeout(10):
        assert await running is None
    await assert_gone(marker)
    session = await store.sessions.get(new.id)
    assert session.status == SessionStatus.QUEUED
    assert session.failure_kind == FailureKind.WORKER_LOST
    events = await all_events(store, new.id)
    assert events[-1].data["status"] == "queued"
    assert git_repo.remote_git("branch", "--list", "telecoder/*") == ""


async def test_worker_runs_the_queue_and_hands_back_work_on_stop(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    worker = build_worker(tuned(settings, worker_concurrency=2), store)
    quick = [request(git_repo, f"echo {i}") for i in range(3)]
    for new in quick:
        await store.sessions.create(new)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 20
    for new in quick:
        while (await store.sessions.get(new.id)).status != SessionStatus.SUCCEEDED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    marker = mark()
    slow = request(git_repo, f"echo $$; exec sleep {marker}")
    await store.sessions.create(slow)
    await wait_for_output(store, slow.id)
    stop.set()
    async with asyncio.timeout(10):
        await running
    await assert_gone(marker)
    session = await store.sessions.get(slow.id)
    assert session.status == SessionStatus.QUEUED
    assert session.available_at <= time.time()
    [attempt] = await store.sessions.attempts(slow.id)
    assert attempt.status == AttemptStatus.RELEASED
    assert worker.running == 0


@pytest.mark.parametrize("retention", [0.0, 3600.0])
async def test_worktree_kept_only_with_a_retention(
    settings: Settings, store: Store, git_repo: GitRepo, retention: float
) -> None:
    worker = build_worker(tuned(settings, worktree_retention_seconds=retention), store)
    new = request(git_repo, "echo hi > hello.txt")
    done = await execute(worker, store, new)
    assert done.status == SessionStatus.SUCCEEDED
    kept = settings.worktrees / f"{new.id}-1"
    assert kept.exists() is (retention > 0)
    assert (settings.worktrees / f"{new.id}-1.done").exists() is (retention > 0)
