"""Live events under load: SSE clients on running sessions of a real ``telecoder serve``.

The server runs as its own process (``--no-workers``); producer processes (``--producers``, 4)
play the workers, appending events to running sessions through the store as a worker does;
client processes (250 streams each) are the clients. For every event each client receives it records
``arrival - append`` (the event's ``ts`` is stamped by the store at append; all processes read
the same clock). Stages are timed apart: the producer times each append to its commit (the part
before any reader can see the event), and a probe stream alone in its own process shows what an
idle client gets (server-side delivery); the rest of the streams' latency is the clients' own
load. ``--client raw`` (default) reads the streams on bare sockets, ``--client httpx`` through
httpx streams (heavier: with 1,000 streams the clients' CPU shows in their figures). Meanwhile
one client times API reads, and the same reads are timed before any
stream is open: the baseline of the same run.

On PostgreSQL the run is made twice on fresh sessions: ``poll`` (today's reader: it polls every
``--poll-ms``; appends send no NOTIFY) and ``notify`` (appends send NOTIFY, the server's reader
wakes on it and polls only every second).

    python benchmarks/sse.py [--clients 100] [--sessions 10] [--events 100] [--rate 20]
                             [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
                             [--modes poll notify] [--client raw|httpx] [--producers 4]
                             [--per-process 250] [--quick]
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
from telecoder.store.notify import EVENTS_CHANNEL, Notice

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


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system; Linux ``/proc``; nan elsewhere): on a busy
    machine, wall-clock latencies carry others' load, CPU seconds per frame do not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_log(home: Path) -> str:
    path = home / "server.log"
    return path.read_text(errors="replace") if path.exists() else ""


# Run in the server before it starts: each collection that paused it 1 ms or more, logged as it
# ends (uvicorn ends on the signal it caught: no atexit) with the time; the benchmark counts
# those of the appends' window (a stream's tail may be a pause).
_GC_WATCH = """
import gc, sys, time
_began = [0.0]
def _watch(phase, info):
    if phase == "start":
        _began[0] = time.perf_counter()
    elif (took := time.perf_counter() - _began[0]) >= 0.001:
        print(f"gc pause: {time.time()} {info['generation']} {took}", file=sys.stderr, flush=True)
gc.callbacks.append(_watch)
"""


def gc_pauses(log: str, since: float, until: float) -> list[tuple[int, float]]:
    """(generation, pause in ms) of the server's pauses of 1 ms or more in the window."""
    found = []
    for line in log.splitlines():
        if line.startswith("gc pause: "):
            at, gen, took = line.split()[2:5]
            if since <= float(at) <= until:
                found.append((int(gen), float(took) * 1000))
    return found


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
    code = _GC_WATCH + (
        "from telecoder.cli.serve import serve; "
        f"serve(host='127.0.0.1', port={port}, workers=False)"
    )
    home.mkdir(parents=True, exist_ok=True)
    with (home / "server.log").open("wb") as log:  # a file: a pipe nobody reads could fill
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)


async def wait_healthy(base: str, proc: subprocess.Popen[bytes], home: Path) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {server_log(home)[-2000:]}")
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


async def listen_raw(
    base: str, path: str, latencies: list[float], opened: asyncio.Event, opening: asyncio.Semaphore
) -> int:
    """``listen`` on a bare socket: the lines as they come, no HTTP client in between (the SSE
    lines of a chunked body are whole: the server sends a frame as one chunk; size lines and
    blank lines are skipped)."""
    host, port = base.removeprefix("http://").split(":")
    received = 0
    async with opening:
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise SystemExit(f"{path}: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
    opened.set()
    try:
        for _ in range(10_000_000):
            line = await reader.readline()
            if not line or line.startswith(b"event: end"):
                break
            if line.startswith(b"data: "):
                now = time.time()
                event = json.loads(line[6:])
                if event.get("kind") == EventKind.OUTPUT.value:
                    latencies.append(now - float(event["ts"]))
                    received += 1
    finally:
        writer.close()
    return received


async def clients_main(raw: bool) -> None:
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
                listen_raw(spec["base"], f"/api/sessions/{sid}/events?after={after}",
                           latencies, o, opening)
                if raw
                else listen(c, f"{spec['base']}/api/sessions/{sid}/events?after={after}",
                            latencies, o, opening)
            )
            for (sid, after), o in zip(spec["streams"], opened, strict=True)
        ]  # fmt: skip
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 300)
        print("ready", flush=True)
        counts = await asyncio.gather(*streams)
    print(json.dumps({"latencies": latencies, "received": sum(counts)}), flush=True)


class Clients:
    """Client processes holding ``len(streams)`` SSE streams between them."""

    def __init__(
        self, base: str, streams: list[tuple[str, int]], client: str, per_process: int
    ) -> None:
        self.procs = []
        for start in range(0, len(streams), per_process):
            proc = subprocess.Popen(
                [sys.executable, "-P", __file__, "--clients-of", base, "--client", client],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            part = streams[start : start + per_process]
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


# --- NOTIFY as the server's bus hears it -------------------------------------------------------


async def hear_notices(
    database_url: str, heard: dict[str, list[float]], stop: asyncio.Event
) -> None:
    """LISTEN as the bus does, on a connection of its own: when each session's notice arrives."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        while not stop.is_set():
            async for n in conn.notifies(timeout=0.5):
                if notice := Notice.decode(n.payload):
                    heard.setdefault(notice.session_id, []).append(time.time())


async def notice_delays(store: Store, heard: dict[str, list[float]]) -> list[float]:
    """append -> NOTIFY heard, per event: a session's k-th notice is its k-th appended line."""
    delays = []
    for sid, times in heard.items():
        lines = [e for e in await store.events.list(sid, limit=1000) if e.kind == EventKind.OUTPUT]
        delays += [t - e.ts for t, e in zip(times, lines, strict=False)]
    return delays


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


async def produce(
    store: Store, lease: Lease, events: int, rate: float, offset: float, took: list[float]
) -> None:
    """Append ``events`` events at ``rate`` a second, as a worker appends them; ``took`` gets
    each append's time to commit (the event's ``ts`` is stamped within it: an upper bound on
    the part of append -> arrival spent before any reader can see the event)."""
    await asyncio.sleep(offset)  # sessions print out of step, as real agents do
    start = time.perf_counter()
    for i in range(events):
        data = {"stream": "stdout", "text": f"line {i} of the benchmark"}
        began = time.time()
        await store.events.append(
            lease.session_id, [NewEvent(kind=EventKind.OUTPUT, data=data)], lease
        )
        took.append(time.time() - began)
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))


async def producer_main(
    database_url: str, ids: list[str], events: int, rate: float, notify: bool, phase: str
) -> None:
    """In a process of its own so that the clients' work cannot slow it."""
    store = await open_store(
        database_url, lease_seconds=600, migrate=False, event_notices=notify, max_overflow=4
    )
    k, n = map(int, phase.split(","))  # this process is the k-th of n: out of step with them
    took: list[float] = []
    try:
        leases = [Lease(session_id=sid, attempt=1, worker_id=WORKER) for sid in ids]
        await asyncio.gather(
            *(
                produce(store, lease, events, rate, (i * n + k) / (len(leases) * n) / rate, took)
                for i, lease in enumerate(leases)
            )
        )
    finally:
        await store.close()
    print(json.dumps({"took": took, "cpu": time.process_time()}), flush=True)


def start_producers(
    database_url: str, ids: list[str], args: argparse.Namespace, notify: bool, k: int, n: int
) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-P", __file__, "--produce", database_url, "--events", str(args.events),
        "--rate", str(args.rate), *(["--notify"] if notify else []), "--phase", f"{k},{n}", *ids,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


# --- one run -------------------------------------------------------------------------------------


async def run_mode(
    args: argparse.Namespace, store: Store, database_url: str, root: Path, mode: str
) -> dict[str, float]:
    notify = mode == "notify"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = root / f"home-{mode}"
    proc = start_server(home, database_url, port, args.poll_ms, notify)
    clients: Clients | None = None
    probe: Clients | None = None
    try:
        await wait_healthy(base, proc, home)
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
        clients = Clients(base, streams, args.client, args.per_process)
        # The probe: one more stream, alone in its process: what an idle client sees.
        probe = Clients(base, streams[:1], args.client, 1)
        await asyncio.wait_for(clients.ready(), 320)
        await asyncio.wait_for(probe.ready(), 60)
        async with httpx.AsyncClient() as c:
            for _ in range(600):  # until the server's bus counts every stream
                health = (await c.get(f"{base}/api/health")).json()
                if health["watchers"] >= args.clients:
                    break
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        heard: dict[str, list[float]] = {}
        hearing = asyncio.create_task(hear_notices(database_url, heard, stop)) if notify else None
        reads = asyncio.create_task(time_reads(base, ids, stop))
        started = time.perf_counter()
        window = [time.time(), 0.0]
        client_pids = [p.pid for p in clients.procs]
        cpu_before = cpu_seconds(proc.pid), sum(map(cpu_seconds, client_pids))
        n = max(1, min(args.producers, len(ids)))  # the workers' part, spread over processes
        producers = [start_producers(database_url, ids[k::n], args, notify, k, n) for k in range(n)]
        commits = []
        producer_cpu = 0.0
        for producer in producers:
            out = await asyncio.to_thread(producer.stdout.read)  # type: ignore[union-attr]
            if await asyncio.to_thread(producer.wait, DEADLINE_SECONDS) != 0:
                raise SystemExit("the producers failed")
            found = json.loads(out.strip().splitlines()[-1])
            commits += [x * 1000 for x in found["took"]]
            producer_cpu += found["cpu"]
        produced = time.perf_counter() - started
        await asyncio.sleep(1.5)  # let the last events arrive before the sessions end
        window[1] = time.time()
        server_cpu = cpu_seconds(proc.pid) - cpu_before[0]
        client_cpu = sum(map(cpu_seconds, client_pids)) - cpu_before[1]
        stop.set()
        under_load = await reads
        if hearing is not None:
            await hearing
        noticed = [x * 1000 for x in await notice_delays(store, heard)]
        for c in claimed:
            await store.queue.finish(c.lease, Outcome(status=c.session.status.SUCCEEDED))
        latencies, received = await clients.results()
        alone, _ = await probe.results()
    finally:
        for held in (clients, probe):
            if held is not None:
                held.kill()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
    # The server's own part, stamped in it: append -> fanned out, append -> written (see bus.py).
    stamped = [x for x in server_log(home).splitlines() if "append -> written" in x]

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
    pm = [x * 1000 for x in alone]
    if noticed:
        print(
            f"    append -> NOTIFY heard (an idle listener, as the bus): p50 "
            f"{pct(noticed, 50):.1f} ms, p99 {pct(noticed, 99):.1f} ms ({len(noticed)} events)"
        )
    print(
        f"    append -> commit (the producer's append calls): p50 {pct(commits, 50):.1f} ms, "
        f"p99 {pct(commits, 99):.1f} ms, max {max(commits, default=float('nan')):.1f} ms"
    )
    print(
        f"    the probe (1 stream alone in its process): p50 {pct(pm, 50):.1f} ms, "
        f"p99 {pct(pm, 99):.1f} ms, max {max(pm, default=float('nan')):.1f} ms"
    )
    if stamped:
        print(f"    the server's stamps: {stamped[-1].partition('live streams: ')[2]}")
    pauses = gc_pauses(server_log(home), *window)
    print(
        "    the server's GC pauses of 1 ms or more while appending: "
        + ", ".join(
            f"gen{g} {len(p)} (max {max(p, default=0):.1f} ms)"
            for g in range(3)
            for p in [[ms for gen, ms in pauses if gen == g]]
        )
    )
    wall = produced + 1.5
    print(
        f"    CPU while appending ({wall:.1f} s): server {server_cpu:.1f} s "
        f"({server_cpu / max(1, received) * 1e6:.0f} us per frame), clients {client_cpu:.1f} s, "
        f"producers {producer_cpu:.1f} s (whole process); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
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
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw",
        help="the streams' client: a bare socket reading lines (lean), or httpx streams",
    )  # fmt: skip
    parser.add_argument("--per-process", type=int, default=STREAMS_PER_PROCESS,
                        help="streams per client process")  # fmt: skip
    parser.add_argument("--producers", type=int, default=4,
                        help="processes appending (as several workers would)")  # fmt: skip
    parser.add_argument("--phase", default="0,1", help=argparse.SUPPRESS)
    parser.add_argument("--produce", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--notify", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients-of", metavar="BASE", help=argparse.SUPPRESS)
    parser.add_argument("ids", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        run = producer_main(args.produce, args.ids, args.events, args.rate, args.notify, args.phase)
        asyncio.run(asyncio.wait_for(run, DEADLINE_SECONDS))
        return
    if args.clients_of:
        asyncio.run(asyncio.wait_for(clients_main(args.client == "raw"), DEADLINE_SECONDS))
        return
    if args.quick:
        args.clients, args.sessions, args.events, args.rate = 20, 2, 10, 20.0
    asyncio.run(asyncio.wait_for(bench(args), DEADLINE_SECONDS * len(args.modes)))


if __name__ == "__main__":
    main()
