"""How many no-op sessions per second the queue and workers carry, beside a raw claim loop.

For SQLite and PostgreSQL, with 1, 2 and 4 worker processes, on the same database in the same run:

  raw        each process loops: claim one queued session with a single
             ``UPDATE … WHERE id = (SELECT … LIMIT 1 [FOR UPDATE SKIP LOCKED]) RETURNING id``
             and mark it done with a second ``UPDATE`` — two short write transactions, through
             the same driver and connection settings TeleCoder uses (``store.db.Database``);
  telecoder  each process runs a real ``Worker`` (``worker_concurrency`` sessions at once) with
             a runner that does no work: the claim (lease, attempt row, ``running`` event),
             the per-session heartbeat task, the attempt's events and the completion (result,
             status event, attempt row) — everything but git and the agent;

and prints sessions/s and telecoder / raw (target: at least 25 %). For scale, the raw loop runs
a third time on the plain synchronous drivers (``sqlite3``, ``psycopg``): the gap between the two
raw figures is what the async driver stack costs (aiosqlite hands every call to a thread).

Run: ``.venv/bin/python benchmarks/throughput.py [--sessions N] [--backends sqlite postgresql]``.
PostgreSQL: a scratch database is created next to ``TELECODER_BENCH_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, text

from telecoder.domain import (
    EventKind,
    Lease,
    NewSession,
    Result,
    ResultType,
    Session,
    SessionStatus,
)
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.settings import Settings
from telecoder.store import Outcome, Store, open_store
from telecoder.store.db import Database
from telecoder.store.schema import attempts, events, sessions, workers
from telecoder.store.sessions import new_session_values
from telecoder.worker import Worker

PG_ADMIN = os.environ.get("TELECODER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CONCURRENCY = 8  # sessions one worker process runs at once

RAW_CLAIM = """
UPDATE sessions SET status = 'running', worker_id = :worker, attempt = attempt + 1,
       lease_until = :lease
 WHERE id = (SELECT id FROM sessions WHERE status = 'queued' AND available_at <= :now
              ORDER BY priority DESC, available_at, created_at LIMIT 1 {lock})
RETURNING id
"""
RAW_DONE = """
UPDATE sessions SET status = 'succeeded', worker_id = NULL, finished_at = :now
 WHERE id = :id AND worker_id = :worker AND status = 'running'
"""


class NoopRunner:
    """The pipeline's bookkeeping without its work: events, then the completion."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run(self, session: Session, lease: Lease, control: AttemptControl) -> Session:
        recorder = EventRecorder(self.store.events, lease)
        recorder.progress("engine_started", engine=session.engine)
        recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": "nothing to do"})
        answer = Result(type=ResultType.TEXT, text="nothing to do")
        recorder.add(EventKind.RESULT, answer.to_dict())
        outcome = Outcome(status=SessionStatus.SUCCEEDED, result=answer)
        return await self.store.queue.finish(lease, outcome, await recorder.drain())

    async def sweep(self) -> list[str]:
        return []  # no worktrees, no engine homes

    async def chats_ended(self, session_ids: list[str]) -> None:
        pass  # no chats here


# --- one worker process ------------------------------------------------------------------------


def raw_process(url: str, name: str, go: Any, results: Any) -> None:
    asyncio.run(_raw(url, name, go, results))


async def _raw(url: str, name: str, go: Any, results: Any) -> None:
    db = Database(url)
    claim = text(RAW_CLAIM.format(lock="" if db.is_sqlite else "FOR UPDATE SKIP LOCKED"))
    done = text(RAW_DONE)
    async with db.read() as conn:  # connect before the clock starts
        await conn.execute(text("SELECT 1"))
    await asyncio.to_thread(go.wait)
    count, last = 0, time.perf_counter()
    while True:
        now = time.time()
        async with db.write() as conn:
            row = (
                await conn.execute(claim, {"worker": name, "lease": now + 30, "now": now})
            ).first()
        if row is None:
            break
        async with db.write() as conn:
            await conn.execute(done, {"id": row[0], "worker": name, "now": time.time()})
        count, last = count + 1, time.perf_counter()
    await db.dispose()
    results.put((count, last))


def driver_process(url: str, name: str, go: Any, results: Any) -> None:
    """The raw loop again, on the plain synchronous driver (sqlite3 / psycopg), for scale:
    what the async driver stack itself costs."""
    sqlite = url.startswith("sqlite")
    if sqlite:
        conn: Any = sqlite3.connect(
            url.removeprefix("sqlite:///"), timeout=30, isolation_level=None
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        claim = RAW_CLAIM.format(lock="").replace(":worker", "?").replace(":lease", "?")
        claim = claim.replace(":now", "?")
        done = "UPDATE sessions SET status = 'succeeded', worker_id = NULL, finished_at = ? "
        done += "WHERE id = ? AND worker_id = ? AND status = 'running'"
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        claim = RAW_CLAIM.format(lock="FOR UPDATE SKIP LOCKED")
        claim = claim.replace(":worker", "%s").replace(":lease", "%s").replace(":now", "%s")
        done = "UPDATE sessions SET status = 'succeeded', worker_id = NULL, finished_at = %s "
        done += "WHERE id = %s AND worker_id = %s AND status = 'running'"
    go.wait()
    count, last = 0, time.perf_counter()
    while True:
        now = time.time()
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(claim, (name, now + 30, now)).fetchone()
        if sqlite:
            conn.execute("COMMIT")
        if row is None:
            break
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
        conn.execute(done, (time.time(), row[0], name))
        if sqlite:
            conn.execute("COMMIT")
        count, last = count + 1, time.perf_counter()
    conn.close()
    results.put((count, last))


def worker_process(url: str, name: str, go: Any, results: Any) -> None:
    asyncio.run(_worker(url, name, go, results))


async def _worker(url: str, name: str, go: Any, results: Any) -> None:
    settings = Settings(
        worker_id=name, worker_concurrency=CONCURRENCY, poll_seconds=0.05, home=Path("/tmp")
    )
    store = await open_store(url, lease_seconds=settings.lease_seconds, migrate=False)
    worker = Worker(settings=settings, store=store, pipeline=NoopRunner(store))
    finished: list[float] = []
    count = 0
    original = worker.execute

    async def execute(claimed: Any) -> Session | None:
        nonlocal count
        session = await original(claimed)
        count += 1
        finished.append(time.perf_counter())
        return session

    worker.execute = execute  # type: ignore[method-assign]
    await asyncio.to_thread(go.wait)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    while not running.done():
        await asyncio.sleep(0.05)
        async with store.db.read() as conn:
            left = (
                await conn.execute(
                    text("SELECT count(*) FROM sessions WHERE status IN ('queued', 'running')")
                )
            ).scalar_one()
        if left == 0:
            stop.set()
            break
    await running
    await store.close()
    results.put((count, max(finished, default=time.perf_counter())))


# --- one measurement -----------------------------------------------------------------------------


async def fill(url: str, n: int) -> None:
    store = await open_store(url, migrate=False)
    now = time.time()
    rows = []
    for i in range(n):
        new = NewSession(repo=f"/bench/repo{i % 10}", prompt=f"no-op {i}", engine="shell")
        rows.append(new_session_values(new, now + i * 1e-6))
    async with store.db.write() as conn:
        for table in (events, attempts, sessions, workers):
            await conn.execute(delete(table))
        for start in range(0, n, 1000):
            await conn.execute(insert(sessions), rows[start : start + 1000])
    await store.close()


def vacuum(url: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def measure(url: str, target: Any, processes: int, n: int) -> float:
    asyncio.run(fill(url, n))
    vacuum(url)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(url, f"bench-{i}", go, results)) for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0 + 0.3 * processes)  # let them start up and connect
    start = time.perf_counter()
    go.set()
    found = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(60)
    done = sum(count for count, _ in found)
    if done != n:
        raise SystemExit(f"{done} of {n} sessions completed")
    return n / (max(last for _, last in found) - start)


def backend_url(name: str, root: Path) -> tuple[str, Any]:
    if name == "sqlite":
        return f"sqlite:///{root / 'bench.db'}", lambda: None
    import psycopg

    db = f"telecoder_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    return PG_ADMIN.rsplit("/", 1)[0] + f"/{db}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000, help="sessions per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--quick", action="store_true", help="100 sessions, 1 worker (CI)")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.workers = 100, [1]
    print(f"{os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}, {args.sessions} sessions each,")
    print(f"{CONCURRENCY} sessions at once per telecoder worker process\n")
    print(
        f"{'backend':<11} {'workers':>7} {'raw/s':>8} {'telecoder/s':>12} {'ratio':>6}"
        f"   {'(raw on the sync driver/s)':>26}"
    )
    for backend in args.backends:
        root = Path(tempfile.mkdtemp(prefix="telecoder-qbench-"))
        url, drop = backend_url(backend, root)
        try:
            asyncio.run(_migrate(url))
            for processes in args.workers:
                raw = measure(url, raw_process, processes, args.sessions)
                ours = measure(url, worker_process, processes, args.sessions)
                sync = measure(url, driver_process, processes, args.sessions * 4)
                print(
                    f"{backend:<11} {processes:>7} {raw:>8.0f} {ours:>12.0f} {ours / raw:>6.0%}"
                    f"   {sync:>26.0f}",
                    flush=True,
                )
        finally:
            drop()
            shutil.rmtree(root, ignore_errors=True)


async def _migrate(url: str) -> None:
    store = await open_store(url)
    await store.close()


if __name__ == "__main__":
    main()
