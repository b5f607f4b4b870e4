"""Live events under load: 100 SSE clients on running sessions of a real ``telecoder serve``.

The server runs as its own process (``--no-workers``); this process plays the workers, appending
events to running sessions through the store as a worker does, and the clients. For every event
each client receives it records ``arrival - append`` (the event's ``ts`` is stamped by the store at
append; both processes read the same clock). Meanwhile one client times API reads, and the same
reads are timed before any stream is open: the baseline of the same run.

    python benchmarks/sse.py [--clients 100] [--sessions 10] [--events 100] [--rate 20]
                             [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Targets (issue 5): p99 append-to-arrival <= 100 ms; API p99 under that load printed beside its
baseline. Bounded: every loop has a count and a deadline; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from telecoder.domain import EventKind, Lease, NewEvent, NewSession
from telecoder.store import Outcome, Store, open_store

DEADLINE_SECONDS = 300
WORKER = "bench-worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def start_server(
    home: Path, database_url: str, port: int, poll_ms: float
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TELECODER_HOME": str(home),
        "TELECODER_DATABASE_URL": database_url,
        "TELECODER_LEASE_SECONDS": "600",
        "TELECODER_RATE_LIMIT_PER_MINUTE": "0",
        "TELECODER_BUS_POLL_SECONDS": str(poll_ms / 1000),
    }
    code = (
        "from telecoder.cli.serve import serve; "
        f"serve(host='127.0.0.1', port={port}, workers=False)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


async def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(f"{base}/api/health")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise SystemExit("the server did not become healthy")


async def listen(
    base: str, session_id: str, after: int, latencies: list[float], opened: asyncio.Event
) -> int:
    """One SSE client: records each event's latency; returns how many events arrived."""
    received = 0
    timeout = httpx.Timeout(30, read=60)
    async with (
        httpx.AsyncClient(timeout=timeout) as c,
        c.stream("GET", f"{base}/api/sessions/{session_id}/events?after={after}") as response,
    ):
        response.raise_for_status()
        opened.set()
        async for line in response.aiter_lines():
            if line.startswith("event: end"):
                break
            if line.startswith("data: "):
                now = time.time()
                event = json.loads(line[6:])
                if event.get("kind") == EventKind.OUTPUT.value:
                    latencies.append(now - float(event["ts"]))
                    received += 1
    return received


async def time_reads(base: str, session_ids: list[str], stop: asyncio.Event) -> list[float]:
    """API reads one after another until ``stop``: a session, then a page of the list."""
    timings: list[float] = []
    async with httpx.AsyncClient(timeout=30) as c:
        i = 0
        while not stop.is_set() and len(timings) < 100_000:
            url = (
                f"{base}/api/sessions/{session_ids[i % len(session_ids)]}"
                if i % 2 == 0
                else f"{base}/api/sessions?limit=20"
            )
            start = time.perf_counter()
            (await c.get(url)).raise_for_status()
            timings.append(time.perf_counter() - start)
            i += 1
            await asyncio.sleep(0.005)
    return timings


async def baseline_reads(base: str, session_ids: list[str], seconds: float) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.create_task(time_reads(base, session_ids, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await task


async def produce(store: Store, lease: Lease, events: int, rate: float) -> None:
    """Append ``events`` events at ``rate`` a second, as a worker appends them."""
    start = time.perf_counter()
    for i in range(events):
        data = {"stream": "stdout", "text": f"line {i} of the benchmark"}
        await store.events.append(
            lease.session_id, [NewEvent(kind=EventKind.OUTPUT, data=data)], lease
        )
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))


async def producer_main(database_url: str, ids: list[str], events: int, rate: float) -> None:
    """The workers' part, in a process of its own so that the clients' work cannot slow it."""
    store = await open_store(database_url, lease_seconds=600, migrate=False)
    try:
        leases = [Lease(session_id=sid, attempt=1, worker_id=WORKER) for sid in ids]
        await asyncio.gather(*(produce(store, lease, events, rate) for lease in leases))
    finally:
        await store.close()


def start_producers(
    database_url: str, ids: list[str], args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, __file__, "--produce", database_url, "--events", str(args.events),
        "--rate", str(args.rate), *ids,
    ]  # fmt: skip
    return subprocess.Popen(argv)


async def bench(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="telecoder-bench-"))
    database_url = args.database_url or f"sqlite:///{root / 'telecoder.db'}"
    created_db = None
    if database_url.startswith("postgresql"):
        import psycopg

        created_db = f"telecoder_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created_db}"')
        database_url = database_url.rsplit("/", 1)[0] + f"/{created_db}"
    store = await open_store(database_url, lease_seconds=600)  # migrates before the server starts
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(root / "home", database_url, port, args.poll_ms)
    try:
        await wait_healthy(base, proc)
        claimed = [
            await store.queue.create_claimed(
                NewSession(repo="/srv/bench", prompt=f"bench {i}", engine="shell"), WORKER
            )
            for i in range(args.sessions)
        ]
        ids = [c.session.id for c in claimed]
        baseline = await baseline_reads(base, ids, seconds=3.0)

        latencies: list[float] = []
        heads = await store.events.heads(ids)
        opened = [asyncio.Event() for _ in range(args.clients)]
        clients = [
            asyncio.create_task(
                listen(base, ids[i % len(ids)], heads[ids[i % len(ids)]].last_seq, latencies, o)
            )
            for i, o in enumerate(opened)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 60)
        async with httpx.AsyncClient() as c:
            for _ in range(200):  # until the server's bus counts every stream
                health = (await c.get(f"{base}/api/health")).json()
                if health["watchers"] >= args.clients:
                    break
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        reads = asyncio.create_task(time_reads(base, ids, stop))
        started = time.perf_counter()
        producers = start_producers(database_url, ids, args)
        if await asyncio.to_thread(producers.wait, DEADLINE_SECONDS) != 0:
            raise SystemExit("the producers failed")
        produced = time.perf_counter() - started
        await asyncio.sleep(0.5)  # let the last events arrive before the sessions end
        stop.set()
        under_load = await reads
        for c in claimed:
            await store.queue.finish(c.lease, Outcome(status=c.session.status.SUCCEEDED))
        counts = await asyncio.wait_for(asyncio.gather(*clients), 60)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        await store.close()
        if created_db is not None:
            import psycopg

            admin = database_url.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created_db}" WITH (FORCE)')

    expected = args.clients * args.events
    ms = [x * 1000 for x in latencies]
    backend = "postgresql" if created_db else "sqlite"
    print(f"SSE fan-out benchmark ({backend}, bus poll {args.poll_ms} ms)")
    print(
        f"  {args.clients} clients on {args.sessions} running sessions; "
        f"{args.events} events per session at {args.rate}/s ({produced:.1f} s)"
    )
    print(f"  delivered {sum(counts)} of {expected} event copies")
    print(
        f"  append -> arrival: p50 {pct(ms, 50):.1f} ms, p90 {pct(ms, 90):.1f} ms, "
        f"p99 {pct(ms, 99):.1f} ms, max {max(ms, default=float('nan')):.1f} ms "
        f"(target p99 <= 100 ms: {'met' if pct(ms, 99) <= 100 else 'MISSED'})"
    )
    b99, l99 = pct(baseline, 99) * 1000, pct(under_load, 99) * 1000
    print(
        f"  API reads: baseline p50 {pct(baseline, 50) * 1000:.1f} ms / p99 {b99:.1f} ms "
        f"({len(baseline)} reads); under load p50 {pct(under_load, 50) * 1000:.1f} ms / "
        f"p99 {l99:.1f} ms ({len(under_load)} reads); p99 ratio {l99 / b99:.2f}x"
    )
    print(f"  mean latency {statistics.fmean(ms) if ms else float('nan'):.1f} ms")
    if sum(counts) != expected:
        raise SystemExit("some events were lost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--events", type=int, default=100, help="per session")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second per session")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--poll-ms", type=float, default=25.0, help="the bus's poll interval")
    parser.add_argument("--produce", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("ids", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        run = producer_main(args.produce, args.ids, args.events, args.rate)
        asyncio.run(asyncio.wait_for(run, DEADLINE_SECONDS))
        return
    asyncio.run(asyncio.wait_for(bench(args), DEADLINE_SECONDS))


if __name__ == "__main__":
    main()
