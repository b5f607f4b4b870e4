"""Live events under load: SSE clients on running sessions of a real ``telecoder serve``.

The server runs as its own process (``--no-workers``); a producer process plays the workers,
appending events to running sessions through the store as a worker does; client processes (250
streams each) are the clients. For every event each client receives it records
``arrival - append`` (the event's ``ts`` is stamped by the store at append; all processes read
the same clock). Meanwhile one client times API reads, and the same reads are timed before any
stream is open: the baseline of the same run.

On PostgreSQL the run is made twice on fresh sessions: ``poll`` (today's reader: it polls every
``--poll-ms``; appends send no NOTIFY) and ``notify`` (appends send NOTIFY, the server's reader
wakes on it and polls only every second).

    python benchmarks/sse.py [--clients 100] [--sessions 10] [--events 100] [--rate 20]
                             [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
                             [--modes poll notify] [--quick]
    # 1,000 streams, 100 sessions each printing a line a second:
    python benchmarks/sse.py --clients 1000 --sessions 100 --events 20 --rate 1 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres

Targets: p99 append-to-arrival <= 100 ms with 100 streams (issue 5), <= 50 ms with 1,000 streams
on PostgreSQL NOTIFY (issue 16); API p99 under that load printed beside its baseline. Bounded:
every loop has a count and a deadline; only 127.0.0.1 is contacted.
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

DEADLINE_SECONDS = 600
WORKER = "bench-worker"
STREAMS_PER_PROCESS = 250
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


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
    home: Path, database_url: str, port: int, poll_ms: float, notify: bool
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TELECODER_HOME": str(home),
        "TELECODER_DATABASE_URL": database_url,
        "TELECODER_LEASE_SECONDS": "600",
        "TELECODER_RATE_LIMIT_PER_MINUTE": "0",
        "TELECODER_BUS_POLL_SECONDS": str(poll_ms / 1000),
        "TELECODER_BUS_NOTIFY": "true" if notify else "false",
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
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(f"{base}/api/health")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise SystemExit("the server did not become healthy")


# --- a client process: many SSE streams on one httpx client --------------------------------------


async def listen(
    c: httpx.AsyncClient,
    url: str,
    latencies: list[float],
    opened: asyncio.Event,
    opening: asyncio.Semaphore,
) -> int:
    """One SSE stream: records each output event's latency; returns how many arrived."""
    received = 0
    async with contextlib.AsyncExitStack() as stack:
        async with opening:  # a few at a time: 1,000 at once would queue on the server's pool
            response = await stack.enter_async_context(c.stream("GET", url))
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


async def clients_main() -> None:
    """Reads {"base", "streams": [[session_id, after], ...]} on stdin; prints "ready" once every
    stream is open, then {"latencies", "received"} as JSON once every stream has ended."""
    spec = json.loads(sys.stdin.readline())
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    opening = asyncio.Semaphore(10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=300), limits=limits) as c:
        opened = [asyncio.Event() for _ in spec["streams"]]
        streams = [
            asyncio.create_task(
                listen(
                    c,
                    f"{spec['base']}/api/sessions/{sid}/events?after={after}",
                    latencies,
                    o,
                    opening,
                )
            )
            for (sid, after), o in zip(spec["streams"], opened, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 300)
        print("ready", flush=True)
        counts = await asyncio.gather(*streams)
    print(json.dumps({"latencies": latencies, "received": sum(counts)}), flush=True)


class Clients:
    """Client processes holding ``len(streams)`` SSE streams between them."""

    def __init__(self, base: str, streams: list[tuple[str, int]]) -> None:
        self.procs = []
        for start in range(0, len(streams), STREAMS_PER_PROCESS):
            proc = subprocess.Popen(
                [sys.executable, "-P", __file__, "--clients-of", base],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            part = streams[start : start + STREAMS_PER_PROCESS]
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"base": base, "streams": part}) + "\n")
            proc.stdin.close()
            self.procs.append(proc)

    async def ready(self) -> None:
        for proc in self.procs:
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            if line.strip() != "ready":
                raise SystemExit(f"a client process failed: {line!r}")

    async def results(self) -> tuple[list[float], int]:
        latencies: list[float] = []
        received = 0
        for proc in self.procs:
            out = await asyncio.to_thread(proc.stdout.read)  # type: ignore[union-attr]
            await asyncio.to_thread(proc.wait, 60)
            found = json.loads(out.strip().splitlines()[-1])
            latencies += found["latencies"]
            received += found["received"]
        return latencies, received

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- API reads ----------------------------------------------------------------------------------


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


# --- the producer process: the workers' part ----------------------------------------------------


async def produce(store: Store, lease: Lease, events: int, rate: float, offset: float) -> None:
    """Append ``events`` events at ``rate`` a second, as a worker appends them."""
    await asyncio.sleep(offset)  # sessions print out of step, as real agents do
    start = time.perf_counter()
    for i in range(events):
        data = {"stream": "stdout", "text": f"line {i} of the benchmark"}
        await store.events.append(
            lease.session_id, [NewEvent(kind=EventKind.OUTPUT, data=data)], lease
        )
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))


async def producer_main(
    database_url: str, ids: list[str], events: int, rate: float, notify: bool
) -> None:
    """In a process of its own so that the clients' work cannot slow it."""
    store = await open_store(
        database_url, lease_seconds=600, migrate=False, event_notices=notify, max_overflow=64
    )
    try:
        leases = [Lease(session_id=sid, attempt=1, worker_id=WORKER) for sid in ids]
        await asyncio.gather(
            *(
                produce(store, lease, events, rate, i / len(leases) / rate)
                for i, lease in enumerate(leases)
            )
        )
    finally:
        await store.close()


def start_producers(
    database_url: str, ids: list[str], args: argparse.Namespace, notify: bool
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-P", __file__, "--produce", database_url, "--events", str(args.events),
        "--rate", str(args.rate), *(["--notify"] if notify else []), *ids,
    ]  # fmt: skip
    return subprocess.Popen(argv)


# --- one run -------------------------------------------------------------------------------------


async def run_mode(
    args: argparse.Namespace, store: Store, database_url: str, root: Path, mode: str
) -> dict[str, float]:
    notify = mode == "notify"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(root / f"home-{mode}", database_url, port, args.poll_ms, notify)
    clients: Clients | None = None
    try:
        await wait_healthy(base, proc)
        claimed = [
            await store.queue.create_claimed(
                NewSession(repo="/srv/bench", prompt=f"bench {mode} {i}", engine="shell"), WORKER
            )
            for i in range(args.sessions)
        ]
        ids = [c.session.id for c in claimed]
        baseline = await baseline_reads(base, ids, seconds=3.0)

        heads = await store.events.heads(ids)
        streams = [
            (ids[i % len(ids)], heads[ids[i % len(ids)]].last_seq) for i in range(args.clients)
        ]
        clients = Clients(base, streams)
        await asyncio.wait_for(clients.ready(), 320)
        async with httpx.AsyncClient() as c:
            for _ in range(600):  # until the server's bus counts every stream
                health = (await c.get(f"{base}/api/health")).json()
                if health["watchers"] >= args.clients:
                    break
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        reads = asyncio.create_task(time_reads(base, ids, stop))
        started = time.perf_counter()
        producers = start_producers(database_url, ids, args, notify)
        if await asyncio.to_thread(producers.wait, DEADLINE_SECONDS) != 0:
            raise SystemExit("the producers failed")
        produced = time.perf_counter() - started
        await asyncio.sleep(1.5)  # let the last events arrive before the sessions end
        stop.set()
        under_load = await reads
        for c in claimed:
            await store.queue.finish(c.lease, Outcome(status=c.session.status.SUCCEEDED))
        latencies, received = await clients.results()
    finally:
        if clients is not None:
            clients.kill()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)

    expected = args.clients * args.events
    ms = [x * 1000 for x in latencies]
    target = 50 if args.clients >= 1000 else 100
    how = "woken by NOTIFY, 1 s fallback poll" if notify else f"polling every {args.poll_ms:g} ms"
    print(f"  {mode}: bus {how}")
    print(f"    delivered {received} of {expected} event copies ({produced:.1f} s of appends)")
    print(
        f"    append -> arrival: p50 {pct(ms, 50):.1f} ms, p90 {pct(ms, 90):.1f} ms, "
        f"p99 {pct(ms, 99):.1f} ms, max {max(ms, default=float('nan')):.1f} ms, "
        f"mean {statistics.fmean(ms) if ms else float('nan'):.1f} ms "
        f"(target p99 <= {target} ms: {'met' if pct(ms, 99) <= target else 'MISSED'})"
    )
    b99, l99 = pct(baseline, 99) * 1000, pct(under_load, 99) * 1000
    print(
        f"    API reads: baseline p50 {pct(baseline, 50) * 1000:.1f} ms / p99 {b99:.1f} ms "
        f"({len(baseline)} reads); under load p50 {pct(under_load, 50) * 1000:.1f} ms / "
        f"p99 {l99:.1f} ms ({len(under_load)} reads); p99 ratio {l99 / b99:.2f}x",
        flush=True,
    )
    if received != expected:
        raise SystemExit("some events were lost")
    return {"p50": pct(ms, 50), "p99": pct(ms, 99)}


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
    modes = args.modes if created_db else ["poll"]  # SQLite: no NOTIFY, the reader polls
    store = await open_store(database_url, lease_seconds=600)  # migrates before the servers
    backend = "postgresql" if created_db else "sqlite"
    print(f"SSE fan-out benchmark ({backend}), {os.cpu_count()} CPUs")
    print(
        f"  {args.clients} clients on {args.sessions} running sessions; "
        f"{args.events} events per session at {args.rate:g}/s",
        flush=True,
    )
    figures = {}
    try:
        for mode in modes:
            figures[mode] = await run_mode(args, store, database_url, root, mode)
    finally:
        await store.close()
        if created_db is not None:
            import psycopg

            admin = database_url.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created_db}" WITH (FORCE)')
    if "poll" in figures and "notify" in figures:
        p, n = figures["poll"], figures["notify"]
        print(
            f"  notify vs poll: p50 {n['p50']:.1f} vs {p['p50']:.1f} ms, "
            f"p99 {n['p99']:.1f} vs {p['p99']:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--events", type=int, default=100, help="per session")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second per session")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--poll-ms", type=float, default=25.0, help="the polling bus's interval")
    parser.add_argument(
        "--modes", nargs="+", choices=["poll", "notify"], default=["poll", "notify"],
        help="PostgreSQL: the bus polling (today) and woken by NOTIFY, in this run",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="20 clients, 2 sessions, 10 events (CI)"
    )
    parser.add_argument("--produce", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--notify", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients-of", metavar="BASE", help=argparse.SUPPRESS)
    parser.add_argument("ids", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        run = producer_main(args.produce, args.ids, args.events, args.rate, args.notify)
        asyncio.run(asyncio.wait_for(run, DEADLINE_SECONDS))
        return
    if args.clients_of:
        asyncio.run(asyncio.wait_for(clients_main(), DEADLINE_SECONDS))
        return
    if args.quick:
        args.clients, args.sessions, args.events, args.rate = 20, 2, 10, 20.0
    asyncio.run(asyncio.wait_for(bench(args), DEADLINE_SECONDS * len(args.modes)))


if __name__ == "__main__":
    main()
