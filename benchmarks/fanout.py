"""Submitting one task to many repositories: one call against one process per repository.

For N local repositories (each a checkout with a bare remote), in the same run:

  one call   `telecoder run --engine shell CMD --repo R1 … --repo RN --detach --json`: one
             process, every repository's intake checks at once, one run in one transaction;
  api        the same through `POST /api/runs` of the app in this process (no process start-up):
             what a server answers;
  processes  `telecoder run --engine shell CMD --repo R --detach` once per repository, one after
             another (what a shell loop did before runs existed);

and prints each time, the sessions queued, and processes / one call (target: 100 repositories
submitted in under 1 s). Run: `.venv/bin/python benchmarks/fanout.py [--repos N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TELECODER = str(Path(sys.executable).parent / "telecoder")
COMMAND = "echo x >> README.md"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def make_repos(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        remote, path = root / "remotes" / f"r{i}.git", root / f"r{i}"
        git("init", "-q", "--bare", "-b", "main", str(remote))
        git("init", "-q", "-b", "main", str(path))
        (path / "README.md").write_text("hello\n")
        git("add", "-A", cwd=path)
        git("commit", "-q", "-m", "initial", cwd=path)
        git("remote", "add", "origin", str(remote), cwd=path)
        git("push", "-q", "origin", "main", cwd=path)
        paths.append(path)
    return paths


def environ(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
    return {**env, "TELECODER_HOME": str(home)}


def one_call(repos: list[Path], home: Path) -> tuple[float, int]:
    args = [x for r in repos for x in ("--repo", str(r))]
    start = time.perf_counter()
    done = subprocess.run(
        [TELECODER, "run", COMMAND, *args, "--engine", "shell", "--detach", "--json"],
        env=environ(home),
        capture_output=True,
        text=True,
        check=True,
    )
    took = time.perf_counter() - start
    return took, len(json.loads(done.stdout)["sessions"])


def processes(repos: list[Path], home: Path) -> tuple[float, int]:
    start = time.perf_counter()
    for repo in repos:
        subprocess.run(
            [TELECODER, "run", COMMAND, "--repo", str(repo), "--engine", "shell", "--detach"],
            env=environ(home),
            capture_output=True,
            check=True,
        )
    return time.perf_counter() - start, len(repos)


def api(repos: list[Path], home: Path) -> tuple[float, int]:
    import httpx

    from telecoder.server import create_app
    from telecoder.settings import Settings
    from telecoder.store import open_store

    async def go() -> tuple[float, int]:
        settings = Settings(home=home)
        store = await open_store(settings.store_url)
        app = create_app(settings, store)
        body = {"prompt": COMMAND, "engine": "shell", "repos": [str(r) for r in repos]}
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
                ) as client,
            ):
                start = time.perf_counter()
                response = await client.post("/api/runs", json=body, timeout=60)
                took = time.perf_counter() - start
                response.raise_for_status()
                return took, len(response.json()["sessions"])
        finally:
            await store.close()

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repos", type=int, default=100, help="how many repositories")
    parser.add_argument("--quick", action="store_true", help="5 repositories (CI)")
    args = parser.parse_args()
    if args.quick:
        args.repos = 5
    root = Path(tempfile.mkdtemp(prefix="telecoder-bench-fanout-"))
    try:
        repos = make_repos(root, args.repos)
        homes = {name: root / f"home-{name}" for name in ("warm", "one", "api", "processes")}
        for home in homes.values():
            home.mkdir()
        one_call(repos[:2], homes["warm"])  # the first database and caches, not measured
        rows = {
            "one call": one_call(repos, homes["one"]),
            "api": api(repos, homes["api"]),
            "processes": processes(repos, homes["processes"]),
        }
        print(f"{args.repos} repositories, one task each (cores: {os.cpu_count()})")
        for name, (took, queued) in rows.items():
            print(f"  {name:<10} {took:7.2f} s   {queued} sessions queued")
        ratio = rows["processes"][0] / rows["one call"][0]
        print(
            f"  processes / one call: {ratio:.1f}x;  one call under 1 s: {rows['one call'][0] < 1}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
