"""A big repository: how long until a session's worktree is ready, and its agent running.

A repository of 100,000 small files in nested directories is generated once per run with
`git fast-import`; then, in the same run (median of --runs):

  baseline      plain `git worktree add -b NEW` in TeleCoder's mirror: the checkout of every
                file (git runs `reset --hard` in the new worktree);
  cold pool     TeleCoder's `Workspace.prepare` with an empty pool (fetch, then a worktree of
                its own: `worktree add --no-checkout` under the mirror's lock, the same
                `reset --hard` after it), taken in turn with the baseline (A, B, A, B, …) and
                compared by the git processes' CPU time (min / median, and run by run): the
                wall time on a busy machine is mostly waiting for a core;
  warm pool     `Workspace.prepare` taking a worktree the pool made in the background (a move
                and a reset that touches only what differs);
  submit→agent  through the real worker and pipeline, the pool off (each session checks the
                repository out: the baseline) then on a warm pool: intake, the queue, the
                workspace, the sandbox, until the agent's (`--engine shell`) first line is
                recorded — target ≤ 1 s on the warm pool;
  burst         N sessions' prepares on one repository at once (a 2,000-file one: coalescing
                does not depend on the size): fetches performed (1 when they coalesce) and the
                time for all N.

Run: `.venv/bin/python -P benchmarks/bigrepo.py [--files 100000] [--runs 5]`; `--quick`: 2,000
files, one run each.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from telecoder.assemble import build_forges, build_worker, build_workspace
from telecoder.domain import EventKind
from telecoder.intake import Request, accept
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from telecoder.warmpool import WorktreePool
from telecoder.workspace import Workspace

GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> None:
    subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, env=GIT_ENV, check=True, capture_output=True
    )


def make_repo(root: Path, files: int) -> Path:
    """A bare repository with ``files`` small files, 50 a directory, in one commit."""
    remote = root / "big.git"
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", "main", str(remote))
    stream = bytearray()
    for i in range(files):
        data = f"file {i}\n".encode()
        stream += b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data)
    message = b"a big repository"
    stream += b"commit refs/heads/main\ncommitter bench <bench@example.com> 1700000000 +0000\n"
    stream += b"data %d\n%s\n" % (len(message), message)
    for i in range(files):
        path = f"src/d{i // 1000:03d}/s{(i // 50) % 20:02d}/f{i:06d}.txt"
        stream += b"M 100644 :%d %s\n" % (i + 1, path.encode())
    git("fast-import", "--quiet", cwd=remote, stdin=bytes(stream))
    return remote


def children_cpu() -> float:
    """CPU seconds used so far by this process's ended children (git): on a machine others
    keep busy, the wall time is mostly waiting for a core; this is the work itself."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def timed(work: Callable[[], Awaitable[object]], cpu: list[float]) -> float:
    start, before = time.perf_counter(), children_cpu()
    await work()
    cpu.append(children_cpu() - before)
    return time.perf_counter() - start


def plain_add(mirror: Path, path: Path, branch: str, sha: str) -> None:
    """The baseline: a plain ``git worktree add`` (its own checkout) in the same mirror."""
    git("worktree", "add", "-q", "-b", branch, str(path), sha, cwd=mirror)


async def filled(pool: WorktreePool, mirror: Path, count: int) -> None:
    deadline = time.monotonic() + 600
    while len(pool.ready(mirror)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the pool was not refilled")
        await asyncio.sleep(0.01)


Runs = dict[str, tuple[list[float], list[float]]]  # name: (wall seconds, git CPU seconds)


async def cold_and_plain(root: Path, remote: Path, runs: int) -> Runs:
    """A cold prepare (an empty pool) and a plain ``git worktree add`` in the same mirror,
    taken in turn (plain, cold, plain, cold, …): on a machine others keep busy, the two see
    the same load. Each worktree is removed (not timed) before the next is made."""
    ws = Workspace(mirrors=root / "mirrors-0", worktrees=root / "wt-0", pool_size=0)
    source = await ws.resolve(str(remote))
    first = await ws.prepare("first", source, branch="tc/first", base=None)  # the mirror
    mirror, sha = first.mirror, first.base_sha
    git("worktree", "remove", "--force", str(first.path), cwd=mirror)
    found: Runs = {"plain": ([], []), "cold": ([], [])}
    for i in range(runs):
        plain_path, name = root / f"plain-{i}", f"s{i}"
        work: dict[str, Callable[[], Awaitable[object]]] = {
            "plain": lambda: asyncio.to_thread(plain_add, mirror, plain_path, f"bench/{i}", sha),  # noqa: B023
            "cold": lambda: ws.prepare(name, source, branch=f"tc/{name}", base=None),  # noqa: B023
        }
        for what, run in work.items():
            walls, cpus = found[what]
            walls.append(await timed(run, cpus))
        for path in (plain_path, ws.worktrees / name):
            git("worktree", "remove", "--force", str(path), cwd=mirror)
    return found


async def prepares(root: Path, remote: Path, runs: int, pool: int, cpu: list[float]) -> list[float]:
    """``Workspace.prepare`` with a pool of ``pool`` refilled in the background."""
    ws = Workspace(mirrors=root / f"mirrors-{pool}", worktrees=root / f"wt-{pool}", pool_size=pool)
    halt = asyncio.Event()
    refilling = asyncio.create_task(ws.pool.run(halt))
    source = await ws.resolve(str(remote))
    first = await ws.prepare("first", source, branch="tc/first", base=None)  # the mirror
    await ws.remove_path(first.path)
    times = []
    for i in range(runs):
        await filled(ws.pool, first.mirror, pool)
        name = f"s{i}"
        times.append(
            await timed(
                lambda: ws.prepare(name, source, branch=f"tc/{name}", base=None),  # noqa: B023
                cpu,
            )
        )
        await ws.remove_path(ws.worktrees / name)
    halt.set()
    await refilling
    return times


async def burst(root: Path, remote: Path, sessions: int) -> tuple[int, float]:
    """(fetches, seconds) for ``sessions`` prepares at once on a warm mirror, counted from
    git's own trace."""
    ws = Workspace(mirrors=root / "mirrors-burst", worktrees=root / "wt-burst", pool_size=0)
    source = await ws.resolve(str(remote))
    await ws.prepare("first", source, branch="tc/first", base=None)
    trace = root / "burst.trace"
    env = {"GIT_TRACE": str(trace)}
    start = time.perf_counter()
    await asyncio.gather(
        *(
            ws.prepare(f"b{i}", source, branch=f"tc/b{i}", base=None, env=env)
            for i in range(sessions)
        )
    )
    seconds = time.perf_counter() - start
    fetches = sum("built-in: git fetch" in line for line in trace.read_text().splitlines())
    return fetches, seconds


async def submit_to_agent(
    root: Path, remote: Path, runs: int, pool: int
) -> tuple[list[float], list[float]]:
    """Submit → the agent's first line recorded, through the worker and pipeline, on a warm
    pool of ``pool`` (0: the pool off, each session checks out the repository itself)."""
    settings = Settings(home=root / f"home-{pool}", worktree_pool=pool, poll_seconds=0.05)
    store = await open_store(settings.store_url)
    worker = build_worker(settings, store)
    assert isinstance(worker.side, WorktreePool)
    pool = worker.side
    ws = build_workspace(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    readies, times = [], []
    try:
        for i in range(runs + 1):  # the first makes the mirror and fills the pool
            if i and pool.size:
                await filled(pool, ws.mirror_path(str(remote)), pool.size)
            start = time.time()
            accepted = await accept(
                Request(repo=str(remote), prompt="echo started", engine="shell"),
                settings=settings,
                workspace=ws,
                engines=["shell"],
                forges=build_forges(settings),
            )
            await store.sessions.create(accepted.session)
            ready, elapsed = await first_line(store, accepted.session.id, start)
            if i:
                readies.append(ready)
                times.append(elapsed)
            await ended(store, accepted.session.id)
    finally:
        stop.set()
        await running
        await store.close()
    return readies, times


STEPS: dict[str, float] = {}  # the last run's steps: ms from submit to each one's first event


async def first_line(store: Store, session_id: str, start: float) -> tuple[float, float]:
    """(submit → workspace ready, submit → the agent's first line), from the events' times."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        events = await store.events.list(session_id, after=0)
        ready = [e.ts for e in events if e.data.get("step") == "workspace_ready"]
        if output := [e.ts for e in events if e.kind == EventKind.OUTPUT]:
            STEPS.clear()
            for e in events:
                name = str(e.data.get("step") or e.kind.value)
                STEPS.setdefault(name, (e.ts - start) * 1000)
            return (ready[0] if ready else output[0]) - start, output[0] - start
        if any(e.kind == EventKind.ERROR for e in events):
            raise RuntimeError(f"session {session_id} failed: {events[-1].data}")
        await asyncio.sleep(0.005)
    raise TimeoutError("the agent printed nothing")


async def ended(store: Store, session_id: str) -> None:
    for _ in range(30_000):
        if (await store.sessions.get(session_id)).status.terminal:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"session {session_id} did not end")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def spread(values: list[float]) -> str:
    """CPU seconds as 'min / median ms'."""
    return f"{min(values) * 1000:6.0f} / {statistics.median(values) * 1000:6.0f} ms"


async def bench(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="telecoder-bigrepo-"))

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        start = time.perf_counter()
        remote = make_repo(root, args.files)
        say(f"repository: {args.files} files, made in {time.perf_counter() - start:.1f} s")
        say(f"median of {args.runs} run(s)")
        say("  (wall time; in brackets the CPU time of the git processes it ran)")
        found = await cold_and_plain(root, remote, args.runs)
        (plain_walls, plain_cpus), (cold_walls, cold_cpus) = found["plain"], found["cold"]
        plain, cold = median_ms(plain_walls), median_ms(cold_walls)
        say(f"  baseline `git worktree add`     {plain:8.0f} ms  [{spread(plain_cpus)}]")
        ratios = [c / p for c, p in zip(cold_cpus, plain_cpus, strict=True) if p > 0]
        cpu_ratio = statistics.median(cold_cpus) / statistics.median(plain_cpus)
        say(
            f"  prepare, cold pool              {cold:8.0f} ms  [{spread(cold_cpus)}]  "
            f"({cold / plain:.2f}x baseline; CPU {cpu_ratio:.2f}x, "
            f"run by run {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        say("  (baseline and cold prepare in turn, in the same mirror; CPU: min / median)")
        cpu: list[float] = []
        warm = median_ms(await prepares(root, remote, args.runs, 2, cpu))
        say(
            f"  prepare, warm pool              {warm:8.0f} ms  [{median_ms(cpu):6.0f} ms]  "
            f"({warm / plain:.2f}x baseline)"
        )
        # Through the worker: the pool off (each session's own checkout) against a warm pool.
        readies, agents = await submit_to_agent(root, remote, args.runs, pool=0)
        ready_off, agent_off = median_ms(readies), median_ms(agents)
        say(f"  submit → workspace ready (off)  {ready_off:8.0f} ms  ({ready_off / plain:.2f}x)")
        say(f"  submit → agent running (off)    {agent_off:8.0f} ms  ({agent_off / plain:.2f}x)")
        readies, agents = await submit_to_agent(root, remote, args.runs, pool=2)
        ready, agent = median_ms(readies), median_ms(agents)
        verdict = "ok" if agent <= 1000 else "over the 1 s target"
        say(f"  submit → workspace ready (warm) {ready:8.0f} ms  ({ready / plain:.2f}x baseline)")
        say(
            f"  submit → agent running (warm)   {agent:8.0f} ms  ({agent / plain:.2f}x baseline, "
            f"{agent_off / agent:.1f}x faster than the pool off, {verdict})"
        )
        steps = ", ".join(f"{name} {ms:.0f}" for name, ms in STEPS.items())
        say(f"  its last run's steps (ms from submit): {steps}")
        # Coalescing does not depend on the size: a small repository, so N checkouts are quick.
        small = make_repo(root / "small", 2000)
        fetches, seconds = await burst(root, small, args.sessions)
        say(
            f"  burst of {args.sessions} prepares at once (2,000 files): {seconds * 1000:.0f} ms, "
            f"{fetches} fetch(es) (one each without coalescing: {args.sessions})"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=8, help="prepares in the burst")
    parser.add_argument("--quick", action="store_true", help="2,000 files, one run each")
    args = parser.parse_args()
    if args.quick:
        args.files, args.runs, args.sessions = 2000, 1, 4
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
