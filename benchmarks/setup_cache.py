"""The setup cache: a repository's setup in the first session (cold, the baseline) against the
second session's (a hit, restored from the cache), through the real pipeline.

Each project is a fresh repository and a fresh ``TELECODER_HOME``; two sessions run one after
the other with ``telecoder run --engine shell`` (a process each, the sandbox runtime). A
session's setup time is from its ``setting_up`` event to its ``engine_started`` event: the
commands (or the restore), the key, the lock and, cold, keeping the entry.

  python  pyproject.toml depending on pytest and requests; setup
          ``python -m venv .venv && .venv/bin/pip install -e .[test]`` (PyPI). The second
          session's agent imports the package with the restored venv, which must find it in its
          OWN worktree (the editable install rewritten to the new path).
  npm     package.json with a few dependencies and its lockfile; setup ``npm ci``
          (registry.npmjs.org).
  --quick a tiny offline setup (``python -m venv --without-pip .venv`` and 300 files), for CI.

Beside each, the cost of a copy on this disk measured in the same run: a plain ``cp -a`` of the
entry's files (without copy-on-write, a restore without a spare is that copy; a hit that moves
in the spare made in the background after the first session, ``setupspare``, does not pay it).

Run: ``.venv/bin/python benchmarks/setup_cache.py [--quick] [--only python|npm]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TELECODER = str(Path(sys.executable).parent / "telecoder")
PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")  # visible inside the sandbox
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "benchpkg"
version = "0.1.0"
dependencies = ["requests"]

[project.optional-dependencies]
test = ["pytest"]

[tool.setuptools.packages.find]
where = ["src"]
"""

PACKAGE_JSON = {
    "name": "bench-app",
    "version": "1.0.0",
    "private": True,
    "dependencies": {"lodash": "^4.17.21", "chalk": "^4.1.2", "express": "^4.19.2"},
    "devDependencies": {"typescript": "^5.4.0"},
}


def sh(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(args, cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def make_repo(root: Path, files: dict[str, str]) -> Path:
    remote, checkout = root / "remote.git", root / "checkout"
    sh("git", "init", "-q", "--bare", "-b", "main", str(remote))
    sh("git", "init", "-q", "-b", "main", str(checkout))
    for rel, content in files.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text(content)
    if "package.json" in files:  # a lockfile, as a real project commits, for `npm ci`
        sh("npm", "install", "--package-lock-only", "--no-audit", "--no-fund", cwd=checkout)
    sh("git", "add", "-A", cwd=checkout)
    sh("git", "commit", "-q", "-m", "initial", cwd=checkout)
    sh("git", "remote", "add", "origin", str(remote), cwd=checkout)
    sh("git", "push", "-q", "origin", "main", cwd=checkout)
    return checkout


def project(kind: str) -> tuple[dict[str, str], str]:
    """The repository's files and the second session's command (what the agent does)."""
    ignore = ".venv/\nnode_modules/\n*.egg-info/\n__pycache__/\n"
    if kind == "quick":
        setup = (
            f"{PYTHON} -m venv --without-pip .venv && mkdir -p .venv/data && "
            "for i in $(seq 300); do echo $i > .venv/data/f$i; done"
        )
        config = f"setup:\n  - {json.dumps(setup)}\n"
        files = {".gitignore": ignore, ".telecoder.yml": config, "README.md": "quick\n"}
        return files, "ls .venv/data | wc -l > out.txt && .venv/bin/python -c 'import sys'"
    if kind == "python":
        setup = f"{PYTHON} -m venv .venv && .venv/bin/pip install -q -e .[test]"
        files = {
            ".gitignore": ignore,
            ".telecoder.yml": f"setup:\n  - {json.dumps(setup)}\n",
            "pyproject.toml": PYPROJECT,
            "src/benchpkg/__init__.py": "import requests\n\nVERSION = '0.1.0'\n",
            "README.md": "bench\n",
        }
        check = ".venv/bin/python -c 'import benchpkg, pytest; print(benchpkg.__file__)' > out.txt"
        return files, check
    files = {
        ".gitignore": ignore,
        ".telecoder.yml": "setup:\n  - npm ci --no-audit --no-fund\n",
        "package.json": json.dumps(PACKAGE_JSON, indent=2) + "\n",
        "README.md": "bench\n",
    }
    check = "node -e \"console.log(require('lodash').VERSION)\" > out.txt"
    return files, check


def session(home: Path, checkout: Path, command: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
    env["TELECODER_HOME"] = str(home)
    done = subprocess.run(
        [TELECODER, "run", command, "--engine", "shell", "--repo", str(checkout), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"session failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    shown: dict[str, Any] = json.loads(done.stdout)
    logs = subprocess.run(
        [TELECODER, "logs", shown["id"], "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    shown["events"] = [json.loads(line) for line in logs.stdout.splitlines()]
    return shown


def setup_seconds(events: list[dict[str, Any]]) -> tuple[float, bool]:
    """From ``setting_up`` to ``engine_started``; whether the setup came from the cache."""
    times: dict[str, float] = {}
    cached = False
    for e in events:
        if e["kind"] == "progress":
            times.setdefault(e["data"]["step"], e["ts"])
        if e["kind"] == "setup" and e["data"].get("cached"):
            cached = True
    return times["engine_started"] - times["setting_up"], cached


def measure(kind: str) -> tuple[float, float, float]:
    files, check = project(kind)
    with tempfile.TemporaryDirectory(prefix=f"tc-bench-cache-{kind}-") as tmp:
        root = Path(tmp)
        checkout = make_repo(root, files)
        home = root / "home"
        first = session(home, checkout, "echo cold > out.txt")
        second = session(home, checkout, check)
        cold, cold_cached = setup_seconds(first["events"])
        hit, hit_cached = setup_seconds(second["events"])
        if cold_cached or not hit_cached:
            raise SystemExit(f"{kind}: expected a miss then a hit ({cold_cached}, {hit_cached})")
        if os.environ.get("BENCH_VERBOSE"):
            for e in second["events"]:
                print(f"  {e['ts'] - second['events'][0]['ts']:8.3f} {e['kind']} {e['data']}"[:200])
        if kind == "python":  # the editable install points at the second worktree
            out = subprocess.run(
                ["git", "show", f"{second['branch']}:out.txt"],
                cwd=root / "remote.git",
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            path = second.get("workspace_path") or ""
            print(f"  python: the second session imported benchpkg from {out}")
            if path and not out.startswith(path):
                raise SystemExit(f"the restored venv imports from {out}, not from {path}")
        floor = copy_floor(home)
        shutil.rmtree(home, ignore_errors=True)
    return cold, hit, floor


def copy_floor(home: Path) -> float:
    """Seconds a plain ``cp -a`` of the entry's files takes on this disk, now: what a restore
    costs without a spare or copy-on-write."""
    [entry] = [p for p in (home / "cache" / "setup").iterdir() if (p / "manifest.json").exists()]
    manifest = json.loads((entry / "manifest.json").read_text())
    count = sum(len(files) for _, _, files in os.walk(entry / "files"))
    rewritten = len(manifest["rewrite"]) + len(manifest["rewrite_binary"]) + len(manifest["links"])
    print(f"  entry: {manifest['size'] / 1e6:.1f} MB, {count} files, {rewritten} path rewrites")
    target = home / "copy-floor"
    target.mkdir()
    started = time.monotonic()
    subprocess.run(["cp", "-a", "--reflink=auto", f"{entry / 'files'}/.", str(target)], check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny offline setup (CI)")
    parser.add_argument("--only", choices=["python", "npm"], help="one project only")
    args = parser.parse_args()
    kinds = ["quick"] if args.quick else [args.only] if args.only else ["python", "npm"]
    head = f"{'project':<8} {'cold setup (baseline)':>22} {'cached setup':>13} {'ratio':>7}"
    print(head + f" {'cp -a':>12}")
    for kind in kinds:
        cold, hit, floor = measure(kind)
        ratio = cold / hit if hit > 0 else float("inf")
        print(f"{kind:<8} {cold:>20.2f} s {hit:>11.3f} s {ratio:>6.0f}x {floor:>10.3f} s")


if __name__ == "__main__":
    main()
