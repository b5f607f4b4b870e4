"""What TeleCoder costs on top of the git work a task needs.

For a small and a medium repository, times (median of N runs, warm mirror):

  baseline   a shell script doing the bare steps: fetch the mirror, `git worktree add` a new
             branch, run the command, commit, push the branch, remove the worktree;
  telecoder  `telecoder run --engine shell CMD --repo CHECKOUT` (a fresh process each time:
             start-up, intake checks, the queue, events, the same git steps);

and prints telecoder / baseline. Run: `.venv/bin/python benchmarks/overhead.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 3000])
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
