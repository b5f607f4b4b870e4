"""What many live sessions cost one worker: CPU (% of one core) and peak RSS.

For each N (default 10 100 300): a real ``telecoder worker`` process (its own home, a SQLite
file, ``--concurrency N``, the runtime given) runs N ``--engine shell`` sessions, each printing
a line a second until it is cancelled. The worker's CPU is read from /proc/PID/stat over the
steady part: D seconds (default 60) from when every session has printed its first line (no
setup, no endings); then every session is cancelled and must end. Its peak RSS is VmHWM from
/proc/PID/status. The baseline, measured in the same run: the same N scripts as plain ``sh``
processes (for D seconds) whose lines a minimal asyncio reader (its own process) reads.

Run: ``.venv/bin/python benchmarks/concurrency.py [--sessions 10 100 300] [--seconds 60]
[--runtime sandbox local]``; ``--quick``: N=10, D=5, both runtimes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep a benchmark named like a standard module (queue.py) from shadowing it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

TELECODER = str(Path(sys.executable).parent / "telecoder")
TICK = os.sysconf("SC_CLK_TCK")
# Prints a line a second for ever; the first one says it started.
SCRIPT = 'echo started; i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 1; done'
BASELINE = 'i=0; while [ "$i" -lt {n} ]; do i=$((i+1)); echo "tick $i"; sleep 1; done'
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


@dataclass
class Figures:
    cpu: float  # % of one core over the steady part
    rss_mb: float  # peak
    steady: float  # seconds measured
    ended: int  # sessions that ended (succeeded) / processes that exited 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def make_repo(root: Path) -> Path:
    remote, path = root / "remote.git", root / "repo"
    git("init", "-q", "--bare", "-b", "main", str(remote))
    git("init", "-q", "-b", "main", str(path))
    (path / "README.md").write_text("hello\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    git("remote", "add", "origin", str(remote), cwd=path)
    git("push", "-q", "origin", "main", cwd=path)
    return path


def environ(home: Path, runtime: str, n: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
    return {
        **env,
        "TELECODER_HOME": str(home),
        "TELECODER_RUNTIME": runtime,
        "TELECODER_WORKER_CONCURRENCY": str(n),
        "TELECODER_WORKER_ID": "bench",
    }


def ramp_budget(n: int) -> float:
    """Seconds allowed for N sessions to start (set up their worktrees) on this machine."""
    return 60.0 + 4.0 * n


async def submit(home: Path, repo: Path, n: int, prompt: str) -> list[str]:
    from telecoder import registry
    from telecoder.assemble import build_forges, build_workspace
    from telecoder.domain import new_session_id
    from telecoder.intake import Request, accept
    from telecoder.settings import Settings
    from telecoder.store import open_store

    settings = Settings(home=home)
    store = await open_store(settings.store_url)
    try:
        accepted = await accept(
            Request(repo=str(repo), prompt=prompt, engine="shell"),
            settings=settings,
            workspace=build_workspace(settings),
            engines=registry.names("engines"),
            forges=build_forges(settings),
        )
        ids = []
        for _ in range(n):
            fresh = dataclasses.replace(accepted.session, id=new_session_id(), branch="")
            ids.append((await store.sessions.create(fresh)).id)
        return ids
    finally:
        await store.close()


async def cancel(home: Path, ids: list[str]) -> None:
    from telecoder.settings import Settings
    from telecoder.store import open_store

    store = await open_store(Settings(home=home).store_url)
    try:
        for session_id in ids:
            await store.sessions.cancel(session_id)
    finally:
        await store.close()


def started_and_ended(db: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        started = conn.execute(
            "SELECT count(DISTINCT session_id) FROM events WHERE kind = 'output' "
            "AND data LIKE '%started%'"
        ).fetchone()[0]
        ended = conn.execute(
            "SELECT count(*) FROM sessions WHERE status IN ('cancelled', 'failed', 'dead')"
        ).fetchone()[0]
    return int(started), int(ended)


def measure_worker(root: Path, repo: Path, runtime: str, n: int, seconds: float) -> Figures:
    home = root / f"home-{runtime}-{n}"
    home.mkdir()
    ids = asyncio.run(submit(home, repo, n, SCRIPT))
    ramp = time.time() + ramp_budget(n)
    env = environ(home, runtime, n)
    log = (home / "worker.log").open("w")
    worker = subprocess.Popen(
        [TELECODER, "worker", "--concurrency", str(n)], env=env, stdout=log, stderr=log
    )
    db = home / "telecoder.db"
    try:
        while (started := started_and_ended(db)[0]) < n:
            if time.time() > ramp:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
                    states = conn.execute(
                        "SELECT status, failure_kind, count(*) FROM sessions GROUP BY 1, 2"
                    ).fetchall()
                log.flush()
                tail = (home / "worker.log").read_text().splitlines()[-20:]
                raise SystemExit(
                    f"{runtime}, N={n}: only {started} sessions started in "
                    f"{ramp_budget(n):.0f} s; sessions: {states}; the worker's log ends:\n"
                    + "\n".join(tail)
                )
            time.sleep(0.5)
        t0, c0 = time.monotonic(), cpu_seconds(worker.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), cpu_seconds(worker.pid)
        asyncio.run(cancel(home, ids))
        deadline = time.time() + 60 + n
        while (ended := started_and_ended(db)[1]) < n and time.time() < deadline:
            time.sleep(0.5)
        rss = peak_rss_mb(worker.pid)
        return Figures(100 * (c1 - c0) / (t1 - t0), rss, t1 - t0, ended)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


async def read_all(n: int, script: str) -> int:
    """The baseline reader: start N ``sh`` processes, read their lines, count them."""
    lines = 0

    async def one() -> int:
        nonlocal lines
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        async for _ in proc.stdout:
            lines += 1
        return await proc.wait()

    codes = await asyncio.gather(*(one() for _ in range(n)))
    return sum(1 for c in codes if c == 0)


def measure_baseline(n: int, seconds: float) -> Figures:
    reader = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--baseline-reader",
            str(n),
            BASELINE.format(n=int(seconds) + 2),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    t0, c0 = time.monotonic(), cpu_seconds(reader.pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_seconds(reader.pid)
    rss = peak_rss_mb(reader.pid)
    out, _ = reader.communicate()
    return Figures(100 * (c1 - c0) / (t1 - t0), rss, t1 - t0, int(out.strip() or 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--seconds", type=float, default=60.0, help="D: seconds of output")
    parser.add_argument("--runtime", nargs="+", default=["sandbox", "local"])
    parser.add_argument("--quick", action="store_true", help="N=10, D=5 (CI)")
    parser.add_argument(
        "--baseline-reader", nargs=2, metavar=("N", "SCRIPT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.baseline_reader:
        n, script = args.baseline_reader
        print(asyncio.run(read_all(int(n), script)))
        return
    if args.quick:
        args.sessions, args.seconds = [10], 5.0
    root = Path(tempfile.mkdtemp(prefix="telecoder-bench-concurrency-"))
    try:
        repo = make_repo(root)
        print(
            f"sessions printing a line a second, measured {args.seconds:.0f} s, on one worker "
            f"(cores: {os.cpu_count()}); CPU: % of one core, steady part; RSS: peak; ended: "
            "sessions cancelled after the measure (or sh exits), all must end"
        )
        print(f"  {'N':>4}  {'what':<16} {'CPU %':>7} {'RSS MB':>7} {'steady s':>9} {'ended':>6}")
        for n in args.sessions:
            rows = {"baseline (sh)": measure_baseline(n, args.seconds)}
            for runtime in args.runtime:
                rows[f"worker {runtime}"] = measure_worker(root, repo, runtime, n, args.seconds)
            for name, f in rows.items():
                print(
                    f"  {n:>4}  {name:<16} {f.cpu:7.1f} {f.rss_mb:7.1f} {f.steady:9.1f} "
                    f"{f.ended:>6}",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
