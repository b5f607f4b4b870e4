"""1,000 sessions across hosts: worker processes sharing one PostgreSQL database.

A scratch database is created next to ``TELECODER_BENCH_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped afterwards. ``--workers``
processes (4) each run a real ``telecoder.worker.Worker`` (``--concurrency`` 250 sessions at
once, the settings' pool: ``TELECODER_DB_POOL_SIZE``/``TELECODER_DB_MAX_OVERFLOW``, its LISTEN
connection, heartbeats, claims with ``FOR UPDATE SKIP LOCKED``); once every worker is up,
``--sessions`` (1,000) sessions are queued at once. Each session is cheap: its runner prints
``--lines`` lines, one every ``--interval`` seconds, through the event recorder as an agent's
output is recorded, and succeeds — everything but git and the agent process: 1,000 real
pipelines (a worktree, a sandboxed process, a commit each) would measure git and bubblewrap on
this 2-core machine, not the store.

Reported: every session finished exactly once (one attempt, one result each), the peak of the
database's connections (``pg_stat_activity``) beside the bound workers × (pool + overflow +
listener), claim latency p50/p99 (queued → the attempt's start), and the event ingestion rate
(events per second while sessions ran). Baseline of the same run: the same sessions on one
worker process with the same total concurrency is not possible on 2 cores, so the baseline is
the raw claim rate of one plain ``UPDATE … SKIP LOCKED`` loop on the same database.

    python benchmarks/hosts.py [--workers 4] [--concurrency 250] [--sessions 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert

from telecoder.domain import (
    EventKind,
    Lease,
    NewEvent,
    NewSession,
    Result,
    ResultType,
    Session,
    SessionStatus,
)
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.settings import Settings
from telecoder.store import Notice, NoticeKind, Outcome, Store, open_store, store_options
from telecoder.store.rows import new_session_values
from telecoder.store.schema import sessions
from telecoder.worker import Worker

PG_ADMIN = os.environ.get("TELECODER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DEADLINE_SECONDS = 900
QUICK_DEADLINE_SECONDS = 180  # under the CI test's own timeout, so a stuck run tells why


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class LinesRunner:
    """A cheap session: a few output lines, a second apart, then success."""

    def __init__(self, store: Store, lines: int, interval: float) -> None:
        self.store = store
        self.lines = lines
        self.interval = interval

    async def run(self, session: Session, lease: Lease, control: AttemptControl) -> Session:
        recorder = EventRecorder(self.store.events, lease)
        recorder.start(control)
        recorder.progress("engine_started", engine=session.engine)
        for i in range(self.lines):
            recorder.add(EventKind.OUTPUT, {"stream": "stdout", "text": f"line {i}"})
            await asyncio.sleep(self.interval)
        answer = Result(type=ResultType.TEXT, text="done")
        recorder.add(EventKind.RESULT, answer.to_dict())
        outcome = Outcome(status=SessionStatus.SUCCEEDED, result=answer)
        return await self.store.queue.finish(lease, outcome, await recorder.drain())

    async def sweep(self) -> list[str]:
        return []

    async def chats_ended(self, session_ids: list[str]) -> None:
        pass


# --- one worker process --------------------------------------------------------------------------


async def work(url: str, name: str, concurrency: int, lines: int, interval: float) -> None:
    """Run a worker until no session is queued or running; print how many it ran."""
    settings = Settings.load(
        worker_id=name, worker_concurrency=concurrency, poll_seconds=0.5, home=Path("/tmp")
    )
    store = await open_store(url, migrate=False, **store_options(settings))
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, tell_tasks, name)
    worker = Worker(settings=settings, store=store, pipeline=LinesRunner(store, lines, interval))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    seen = False
    while not running.done():
        await asyncio.sleep(0.5)
        async with store.db.read() as conn:
            left = (
                await conn.exec_driver_sql(
                    "SELECT count(*) FROM sessions WHERE status IN ('queued', 'running')"
                )
            ).scalar_one()
        seen = seen or left > 0
        if seen and left == 0:
            stop.set()
    await running
    await store.close()


def tell_tasks(name: str) -> None:
    """SIGUSR1: print where each of this worker's tasks waits, down its chain of awaits (a stuck
    run says why)."""
    lines = []
    for task in asyncio.all_tasks():
        chain: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_frame"):
            if coro.cr_frame is not None:
                chain.append(f"{coro.__qualname__}:{coro.cr_frame.f_lineno}")
            coro = coro.cr_await
        lines.append(f"  {task.get_name()}: {' > '.join(chain) or repr(coro)}")
    print(f"--- {name}: {len(lines)} tasks ---", *sorted(lines), sep="\n", file=sys.stderr)


# --- the run -------------------------------------------------------------------------------------


def stuck(
    monitor: psycopg.Connection[Any], procs: list[subprocess.Popen[bytes]], what: str
) -> None:
    """Say what is unfinished and where the workers wait, then give up."""
    rows = monitor.execute(
        "SELECT status, worker_id, count(*) FROM sessions GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    print(f"{what}; sessions by status and worker: {rows}", file=sys.stderr)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
    time.sleep(2.0)
    raise SystemExit(what)


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


async def queue_sessions(url: str, n: int, *, migrate: bool = False) -> None:
    """Queue ``n`` sessions in one transaction, waking the workers as a submission does."""
    store = await open_store(url, migrate=migrate, pool_size=1, max_overflow=0)
    now = time.time()
    rows = [
        new_session_values(NewSession(repo="/bench/repo", prompt=f"cheap {i}", engine="shell"), now)
        for i in range(n)
    ]
    try:
        async with store.db.write() as conn:
            for start in range(0, n, 500):
                await conn.execute(insert(sessions), rows[start : start + 500])
            await store.db.notify(conn, Notice(NoticeKind.QUEUED, ""))
    finally:
        await store.close()


async def append_rate(url: str, writers: int, appends: int, notify: bool) -> float:
    """Appends per second: ``writers`` sessions appending one line at a time, at once."""
    store = await open_store(url, migrate=False, event_notices=notify)
    try:
        ids = [
            (
                await store.sessions.create(NewSession(repo="/bench/a", prompt="a", engine="shell"))
            ).id
            for _ in range(writers)
        ]
        line = [NewEvent(kind=EventKind.OUTPUT, data={"stream": "stdout", "text": "a line"})]

        async def write(sid: str) -> None:
            for _ in range(appends):
                await store.events.append(sid, line)

        start = time.perf_counter()
        await asyncio.gather(*(write(sid) for sid in ids))
        return writers * appends / (time.perf_counter() - start)
    finally:
        await store.close()


def notify_cost(url: str, writers: int, appends: int, rounds: int = 3) -> tuple[float, float]:
    """Append rates without and with the event NOTIFY, rounds interleaved (the machine's load
    drifts); the best round of each."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for notify in (False, True):
            rates[notify].append(asyncio.run(append_rate(url, writers, appends, notify)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM sessions")
    return max(rates[False]), max(rates[True])


def connections(conn: psycopg.Connection[Any], db: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (db,),
    ).fetchone()
    return int(row[0]) if row else 0


def raw_claims(url: str, n: int) -> float:
    """The baseline: claims per second of one plain claim loop (then the rows are reset)."""
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for _ in range(n):
            conn.execute(
                "UPDATE sessions SET status = 'running' WHERE id = (SELECT id FROM sessions "
                "WHERE status = 'queued' ORDER BY priority DESC, available_at, created_at "
                "LIMIT 1 FOR UPDATE SKIP LOCKED)"
            )
        elapsed = time.perf_counter() - start
        conn.execute("DELETE FROM sessions")
    return n / elapsed


def bench(args: argparse.Namespace) -> None:
    db = f"telecoder_hosts_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{db}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    settings = Settings.load()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(queue_sessions(url, args.sessions, migrate=True))
        raw = raw_claims(url, args.sessions)
        plain, notified = notify_cost(url, args.writers, args.appends)

        env = {
            **os.environ,
            "TELECODER_DB_POOL_SIZE": str(settings.db_pool_size),
            "TELECODER_DB_MAX_OVERFLOW": str(settings.db_max_overflow),
        }
        for i in range(args.workers):
            argv = [
                sys.executable, "-P", __file__, "--work", url, "--name", f"host-{i}",
                "--concurrency", str(args.concurrency), "--lines", str(args.lines),
                "--interval", str(args.interval),
            ]  # fmt: skip
            procs.append(subprocess.Popen(argv, env=env))
        monitor = psycopg.connect(url, autocommit=True)
        deadline = time.monotonic() + args.deadline
        while monitor.execute("SELECT count(*) FROM workers").fetchone()[0] < args.workers:  # type: ignore[index]
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                stuck(monitor, procs, "the workers did not come up")
            time.sleep(0.1)
        time.sleep(1.0)  # past their first look for work

        asyncio.run(queue_sessions(url, args.sessions))
        peak = 0
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                stuck(monitor, procs, "the run did not finish in time")
            peak = max(peak, connections(monitor, db))
            time.sleep(0.1)
        if any(p.returncode != 0 for p in procs):
            raise SystemExit("a worker failed")
        figures = monitor.execute(
            """
            SELECT
              (SELECT count(*) FROM sessions WHERE status = 'succeeded'),
              (SELECT count(*) FROM attempts),
              (SELECT count(DISTINCT session_id) FROM attempts),
              (SELECT count(*) FROM events WHERE kind = 'result'),
              (SELECT count(*) FROM events),
              (SELECT min(ts) FROM events), (SELECT max(ts) FROM events)
            """
        ).fetchone()
        claims = [
            float(r[0])
            for r in monitor.execute(
                "SELECT a.started_at - s.created_at FROM attempts a "
                "JOIN sessions s ON s.id = a.session_id"
            ).fetchall()
        ]
        per_worker = dict(
            monitor.execute("SELECT worker_id, count(*) FROM attempts GROUP BY 1").fetchall()
        )
        monitor.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    assert figures is not None
    succeeded, attempts, attempted, results, events, first, last = figures
    bound = args.workers * (settings.db_pool_size + settings.db_max_overflow + 1)
    ms = [c * 1000 for c in claims]
    once = succeeded == attempts == attempted == results == args.sessions
    print(f"Sessions across hosts (PostgreSQL), {os.cpu_count()} CPUs")
    print(
        f"  {args.workers} worker processes x {args.concurrency} sessions at once; "
        f"{args.sessions} sessions of {args.lines} lines {args.interval:g} s apart"
    )
    print(
        f"  finished: {succeeded} of {args.sessions} succeeded; {attempts} attempts on "
        f"{attempted} sessions; {results} results "
        f"({'exactly once' if once else 'NOT exactly once'})"
    )
    print(f"  sessions per worker: {json.dumps(per_worker, sort_keys=True)}")
    print(
        f"  connections: peak {peak} (bound {args.workers} x "
        f"({settings.db_pool_size} pool + {settings.db_max_overflow} overflow + 1 listener) "
        f"= {bound}: {'within' if peak <= bound else 'EXCEEDED'})"
    )
    print(
        f"  claim latency (queued -> attempt started): p50 {pct(ms, 50):.0f} ms, "
        f"p99 {pct(ms, 99):.0f} ms, max {max(ms, default=float('nan')):.0f} ms "
        f"(all {args.sessions} queued at once)"
    )
    span = float(last) - float(first) if first is not None else float("nan")
    print(
        f"  events: {events} in {span:.1f} s = {events / span:.0f} events/s ingested; "
        f"baseline: a plain claim loop on one connection {raw:.0f} claims/s"
    )
    print(
        f"  append cost of the event NOTIFY ({args.writers} sessions appending a line at a time, "
        f"at once): {notified:.0f} appends/s with it, {plain:.0f}/s without "
        f"({(plain - notified) / plain:+.0%} slower)"
    )
    if not once or peak > bound:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=250)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=5, help="output lines per session")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    parser.add_argument("--writers", type=int, default=50, help="appenders (NOTIFY's cost)")
    parser.add_argument("--appends", type=int, default=40, help="appends per appender")
    parser.add_argument("--deadline", type=float, default=DEADLINE_SECONDS, help="seconds")
    parser.add_argument("--quick", action="store_true", help="2 workers x 10 sessions (CI)")
    parser.add_argument("--work", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        asyncio.run(work(args.work, args.name, args.concurrency, args.lines, args.interval))
        return
    if args.quick:
        args.workers, args.concurrency, args.sessions, args.lines = 2, 10, 10, 2
        args.interval, args.writers, args.appends = 0.2, 5, 10
        args.deadline = min(args.deadline, QUICK_DEADLINE_SECONDS)
    bench(args)


if __name__ == "__main__":
    main()
