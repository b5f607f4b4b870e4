"""What TeleCoder costs on top of the git work a task needs.

For a small and a medium repository, times (median of N runs, warm mirror):

  baseline   a shell script doing the bare steps: fetch the mirror, `git worktree add` a new
             branch, run the command, commit, push the branch, remove the worktree;
  telecoder  `telecoder run --engine shell CMD --repo CHECKOUT` (a fresh process each time:
             start-up, intake checks, the queue, events, the same git steps);

and prints telecoder / baseline. Then what submitting costs (median wall time and CPU of N
fresh processes), beside two baselines measured in the same run, `python -c pass` and
`git --version`:

  --help           `telecoder --help`;
  detach, local    `telecoder run --detach` on the local SQLite database (intake checks, one row);
  detach, server   `telecoder run --detach --server URL` against a `telecoder serve --no-workers`
                   started here (one HTTP request; target: 150 ms on a quiet machine).

Run: `.venv/bin/python benchmarks/overhead.py [--runs N] [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TELECODER = str(Path(sys.executable).parent / "telecoder")
COMMAND = "sed -i 's/colour/color/g' README.md"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}

BASELINE = r"""
set -e
git -C "$MIRROR" fetch -q origin
git -C "$MIRROR" worktree add -q -b "bench/$RUN" "$WT" refs/remotes/origin/main
cd "$WT"
sh -c "$COMMAND"
git add -A
git -c core.hooksPath=/dev/null commit -q --no-verify -m "$COMMAND"
git push -q "$REMOTE" "HEAD:refs/heads/bench/$RUN"
cd /
git -C "$MIRROR" worktree remove --force "$WT"
"""


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(args, cwd=cwd, env=env or GIT_ENV, check=True, capture_output=True)


def make_repo(root: Path, files: int) -> tuple[Path, Path]:
    remote = root / "remote.git"
    checkout = root / "checkout"
    sh("git", "init", "-q", "--bare", "-b", "main", str(remote))
    sh("git", "init", "-q", "-b", "main", str(checkout))
    (checkout / "README.md").write_text("The colour of magic.\n")
    for i in range(files):
        folder = checkout / "src" / f"pkg{i % 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"module{i}.py").write_text(f"VALUE_{i} = {i}\n" * 40)
    sh("git", "add", "-A", cwd=checkout)
    sh("git", "commit", "-q", "-m", "initial", cwd=checkout)
    sh("git", "remote", "add", "origin", str(remote), cwd=checkout)
    sh("git", "push", "-q", "origin", "main", cwd=checkout)
    return checkout, remote


def time_baseline(root: Path, remote: Path, runs: int) -> list[float]:
    mirror = root / "mirror.git"
    sh("git", "init", "-q", "--bare", str(mirror))
    sh("git", "-C", str(mirror), "remote", "add", "origin", str(remote))
    sh(
        "git",
        "-C",
        str(mirror),
        "config",
        "remote.origin.fetch",
        "+refs/heads/*:refs/remotes/origin/*",
    )
    sh("git", "-C", str(mirror), "fetch", "-q", "origin")
    times = []
    for run in range(runs + 1):
        env = {
            **GIT_ENV,
            "MIRROR": str(mirror),
            "WT": str(root / f"wt{run}"),
            "REMOTE": str(remote),
            "RUN": str(run),
            "COMMAND": COMMAND,
        }
        start = time.perf_counter()
        sh("sh", "-c", BASELINE, env=env)
        if run:  # the first run warms caches, as the telecoder warm-up does
            times.append(time.perf_counter() - start)
    return times


def time_telecoder(root: Path, checkout: Path, runs: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
    env["TELECODER_HOME"] = str(root / "home")
    times = []
    for run in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(
            [TELECODER, "run", COMMAND, "--repo", str(checkout), "--engine", "shell", "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"telecoder run failed: {done.stderr}")
        if run:  # the first run clones the mirror
            times.append(elapsed)
    return times


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU (user + system) of ``runs`` fresh processes, in ms."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:3])} failed: {done.stderr}")
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submit_costs(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="telecoder-bench-submit-"))
    server = None
    try:
        checkout, _ = make_repo(root, 10)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
        local = {**env, "TELECODER_HOME": str(root / "home")}
        served = {**env, "TELECODER_HOME": str(root / "server-home")}
        port = free_port()
        server = subprocess.Popen(
            [TELECODER, "serve", "--port", str(port), "--no-workers"],
            env=served,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        submit = [TELECODER, "run", "true", "--repo", str(checkout), "--engine", "shell"]
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "git --version": ["git", "--version"],
            "telecoder --help": [TELECODER, "--help"],
            "run --detach, local": [*submit, "--detach"],
        }
        timed(rows["run --detach, local"], local, 1)  # the database is created, not measured
        print(f"\nsubmitting, median of {runs} fresh processes:")
        print(f"{'':<24} {'wall ms':>8} {'cpu ms':>7}")
        for name, argv in rows.items():
            wall, cpu = timed(argv, local, runs)
            print(f"{name:<24} {wall:>8.0f} {cpu:>7.0f}", flush=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("telecoder serve did not start") from None
                time.sleep(0.2)
        remote = [*submit, "--detach", "--server", url]
        timed(remote, env, 1)  # the server's first request, not measured
        wall, cpu = timed(remote, env, runs)
        print(f"{'run --detach, server':<24} {wall:>8.0f} {cpu:>7.0f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 3000])
    parser.add_argument("--quick", action="store_true", help="2 runs on a small repository (CI)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.sizes = 2, [10]
    print(f"{'files':>6} {'baseline s':>11} {'telecoder s':>12} {'ratio':>6}")
    for files in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="telecoder-bench-"))
        try:
            checkout, remote = make_repo(root, files)
            base = statistics.median(time_baseline(root, remote, args.runs))
            ours = statistics.median(time_telecoder(root, checkout, args.runs))
            print(f"{files:>6} {base:>11.3f} {ours:>12.3f} {ours / base:>6.2f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    submit_costs(3 if args.quick else 20)


if __name__ == "__main__":
    main()
