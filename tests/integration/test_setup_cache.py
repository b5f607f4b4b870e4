"""The setup cache (``setupcache``): a repository's setup runs once per key, later sessions get
its result restored.

Sessions go through the real Worker, Pipeline, sandbox runtime (bubblewrap) and git, with the
shell engine (its prompt is a shell command, so the "agent" reads and edits the restored files).
The cache's own mechanics (eviction, clear, a build killed half-way) are exercised on the real
``SetupCache`` and real files; ``telecoder cache`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder import setupspare
from telecoder.assemble import build_worker
from telecoder.cli.cache import size_text
from telecoder.domain import EventKind, NewSession, SessionStatus
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.setupcache import MANIFEST, SetupCache, cache_key, depends_on
from telecoder.store import Store, open_store
from tests.cli import cli_env, telecoder, wait_for
from tests.conftest import GitRepo, make_repo
from tests.integration.test_engine_shell import all_events, execute, tuned
from tests.procs import WorkerProcs, events, fast_env, worker_processes
from tests.server import client

SETUP = """
setup:
  commands:
    - mkdir -p deps/sub && echo "$PWD" > deps/where && echo one > deps/sub/a
    - ln -s "$PWD/deps/where" deps/link && echo installing && echo done installing
  cache_key: [deps.txt]
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # The cache is the host's, not the database's: SQLite is enough.
    store = await open_store(f"sqlite:///{tmp_path / 'telecoder.db'}", lease_seconds=5)
    yield store
    await store.close()


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def cached_repo(tmp_path: Path, config: str = SETUP) -> GitRepo:
    files = {
        "README.md": "hello\n",
        ".gitignore": "deps/\n",
        "package-lock.json": "{}\n",
        "deps.txt": "one\n",
        ".telecoder.yml": config,
    }
    return make_repo(tmp_path, files=files)


def change(repo: GitRepo, rel: str, content: str) -> None:
    (repo.path / rel).write_text(content)
    repo.git("commit", "-qam", f"change {rel}")
    repo.git("push", "-q", "origin", "main")


def shell(repo: GitRepo, prompt: str) -> NewSession:
    return NewSession(repo=str(repo.path), prompt=prompt, engine="shell")


async def run(worker: Any, store: Store, repo: GitRepo, prompt: str) -> tuple[Any, list[Any]]:
    done = await execute(worker, store, shell(repo, prompt), within=60)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    return done, await all_events(store, done.id)


def setup_events(found: list[Any]) -> list[dict[str, Any]]:
    return [e.data for e in found if e.kind == EventKind.SETUP]


def steps(found: list[Any]) -> dict[str, dict[str, Any]]:
    return {e.data["step"]: e.data for e in found if e.kind == EventKind.PROGRESS}


def branch_file(repo: GitRepo, branch: str, rel: str) -> list[str]:
    return repo.remote_git("show", f"{branch}:{rel}").splitlines()


READ = 'cat deps/where > out.txt; readlink deps/link >> out.txt; echo "$PWD" >> out.txt; '
READ += "find deps | sort >> out.txt"


async def test_a_hit_restores_the_setups_files_at_the_new_path_and_the_agent_cannot_reach_the_cache(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = cached_repo(tmp_path)
    worker = build_worker(tuned(settings), store)
    first, found = await run(worker, store, repo, READ)
    built = setup_events(found)
    assert [r["command"] for r in built][-1] == "nothing left to commit"
    assert not any(r.get("cached") for r in built)
    # Setup's lines came as they were printed, as output events of the setup phase.
    lines = [e.data["text"] for e in found if e.kind == EventKind.OUTPUT]
    assert lines[:2] == ["installing", "done installing"]
    assert all(e.data.get("phase") == "setup" for e in found if e.kind == EventKind.OUTPUT)
    stored = steps(found)["setup_cached"]
    key = stored["key"]
    assert stored["paths"] == ["deps"]
    where, link, pwd, *listing = branch_file(repo, first.branch, "out.txt")
    assert where == pwd
    assert link == f"{pwd}/deps/where"
    assert listing == ["deps", "deps/link", "deps/sub", "deps/sub/a", "deps/where"]

    # The second session: restored, not run; the paths inside point at its own worktree.
    edit = READ + "; rm deps/sub/a; echo hacked > deps/where; rm deps/link"
    second, found = await run(worker, store, repo, edit)
    [hit] = setup_events(found)
    assert hit["cached"] is True
    assert hit["key"] == key
    assert hit["ok"] is True
    assert isinstance(hit["restore_ms"], int)
    assert steps(found)["setup_restored"]["key"] == key
    assert not [e for e in found if e.kind == EventKind.OUTPUT and e.data.get("phase")]
    where2, link2, pwd2, *listing2 = branch_file(repo, second.branch, "out.txt")
    assert pwd2 != pwd
    assert (where2, link2, listing2) == (pwd2, f"{pwd2}/deps/where", listing)

    # What the second agent did to its copy did not reach the cache, nor the third session.
    entry = settings.setup_cache_dir / key / "files" / "deps"
    assert (entry / "sub" / "a").read_text() == "one\n"
    assert (entry / "where").read_text() == f"{pwd}\n"
    assert os.readlink(entry / "link") == f"{pwd}/deps/where"
    third, found = await run(worker, store, repo, READ)
    assert setup_events(found)[0]["cached"] is True
    where3, link3, pwd3, *listing3 = branch_file(repo, third.branch, "out.txt")
    assert (where3, link3, listing3) == (pwd3, f"{pwd3}/deps/where", listing)


async def test_a_restored_venv_imports_the_editable_package_from_the_new_worktree(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    # A venv with what an editable install leaves (offline: no pip, no index): a .pth file and a
    # console script, both holding the worktree's absolute path.
    python = Path(sys.base_prefix) / "bin" / "python3"  # mounted in the sandbox
    purelib = ".venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'"
    setup = [
        f"{python} -m venv --without-pip .venv",
        f'echo "$PWD/src" > "$({purelib})/__editable__.tcpkg-0.1.pth"',
        'printf "#!$PWD/.venv/bin/python\\nimport tcpkg\\nprint(tcpkg.NAME)\\n" > .venv/bin/tcpkg',
        "chmod +x .venv/bin/tcpkg",
    ]
    files = {
        ".gitignore": ".venv/\n__pycache__/\n",
        ".telecoder.yml": "setup:\n" + "".join(f"  - {json.dumps(c)}\n" for c in setup),
        "src/tcpkg/__init__.py": "NAME = 'tcpkg'\n",
    }
    repo = make_repo(tmp_path, files=files)
    worker = build_worker(tuned(settings), store)
    use = (
        ".venv/bin/python -c 'import tcpkg; print(tcpkg.__file__)' > out.txt && "
        '.venv/bin/tcpkg >> out.txt && head -1 .venv/bin/tcpkg >> out.txt && echo "$PWD" >> out.txt'
    )
    first, _ = await execute_ok(worker, store, repo, use)
    second, found = await execute_ok(worker, store, repo, use)
    assert setup_events(found)[0]["cached"] is True
    for done in (first, second):
        module, printed, shebang, pwd = branch_file(repo, done.branch, "out.txt")
        assert module == f"{pwd}/src/tcpkg/__init__.py"
        assert printed == "tcpkg"
        assert shebang == f"#!{pwd}/.venv/bin/python"
    assert first.branch != second.branch


async def execute_ok(worker: Any, store: Store, repo: GitRepo, prompt: str) -> tuple[Any, Any]:
    done = await execute(worker, store, shell(repo, prompt), within=180)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    return done, await all_events(store, done.id)


async def test_a_lockfile_or_a_cache_key_file_change_misses_another_file_hits(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = cached_repo(tmp_path)
    worker = build_worker(tuned(settings), store)
    keys = []
    for rel in (None, "README.md", "deps.txt", "package-lock.json"):
        if rel is not None:
            change(repo, rel, "changed\n")
        _, found = await run(worker, store, repo, "echo ok > out.txt")
        taken = steps(found)
        keys.append(taken.get("setup_cached", taken.get("setup_restored", {})).get("key"))
        assert ("setup_restored" in taken) == (rel == "README.md"), rel
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3]}) == 3
    assert len(SetupCache(settings.setup_cache_dir, settings.cache_max).entries()) == 3


async def test_two_sessions_on_a_cold_key_run_the_setup_once(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = cached_repo(tmp_path, "setup: sleep 1 && mkdir -p deps && echo built > deps/flag\n")
    worker = build_worker(tuned(settings, worker_concurrency=2), store)
    new = [shell(repo, "cat deps/flag > out.txt") for _ in range(2)]
    for item in new:
        await store.sessions.create(item)
    claimed = [await store.queue.claim(worker.id) for _ in new]
    async with asyncio.timeout(60):
        done = await asyncio.gather(*(worker.execute(c) for c in claimed if c is not None))
    assert [d.status for d in done if d is not None] == [SessionStatus.SUCCEEDED] * 2
    ran = restored = 0
    for session in new:
        found = await all_events(store, session.id)
        reports = setup_events(found)
        restored += sum(1 for r in reports if r.get("cached"))
        ran += sum(1 for r in reports if r["command"].startswith("sleep 1"))
    assert (ran, restored) == (1, 1)


async def test_setup_failures_are_not_cached_and_cache_false_runs_every_time(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = cached_repo(tmp_path, "setup: {commands: [mkdir -p deps], cache: false}\n")
    worker = build_worker(tuned(settings), store)
    for _ in range(2):
        _, found = await run(worker, store, repo, "echo ok > out.txt")
        assert next(r["command"] for r in setup_events(found)) == "mkdir -p deps"
    change(repo, ".telecoder.yml", "setup: mkdir -p deps && exit 4\n")
    failed = await execute(worker, store, shell(repo, "echo ok > out.txt"), within=60)
    assert failed.status == SessionStatus.FAILED
    assert SetupCache(settings.setup_cache_dir, settings.cache_max).entries() == []


def test_a_worker_killed_mid_setup_leaves_no_entry_and_the_next_attempt_rebuilds(
    tmp_path: Path, home: Path, worker_procs: WorkerProcs
) -> None:
    # The first run of the setup announces itself and hangs (its engine home marks it); the
    # retried attempt, after the worker is killed, runs it through.
    config = (
        'setup: if [ ! -f "$HOME/once" ]; then touch "$HOME/once"; mkdir -p deps; '
        "echo half > deps/half; echo setup-started; sleep 120; fi; mkdir -p deps && "
        "echo built > deps/flag\n"
    )
    repo = cached_repo(tmp_path, config)
    env = fast_env(home)
    submitted = telecoder(
        "run", "cat deps/flag > out.txt", "--repo", str(repo.path), "--detach", "--json", env=env
    )
    assert submitted.returncode == 0, submitted.stderr
    session_id = json.loads(submitted.stdout)["id"]
    proc = worker_procs.start(env, "worker-a")

    def started() -> bool:
        return any(e["data"].get("text") == "setup-started" for e in events(session_id, env))

    wait_for(started, timeout=60, what="the setup to start")
    WorkerProcs.kill(proc)
    cache = Settings(home=home).setup_cache_dir
    listed = telecoder("cache", "list", "--json", env=env)
    assert listed.returncode == 0
    assert json.loads(listed.stdout) == []
    worker_procs.start(env, "worker-b")

    def finished() -> dict[str, Any] | None:
        shown = json.loads(telecoder("show", session_id, "--json", env=env).stdout)
        return shown if shown["status"] in ("succeeded", "failed") else None

    shown = wait_for(finished, timeout=90, what="the retried attempt")
    assert shown["status"] == "succeeded", shown.get("error")
    found = events(session_id, env)
    cached = [e["data"]["step"] for e in found if e["kind"] == "progress"]
    assert "setup_restored" not in cached
    assert "setup_cached" in cached
    [entry] = [p for p in cache.iterdir() if (p / MANIFEST).exists()]
    # The retried attempt's fresh worktree had nothing of the killed one's half-made setup.
    assert sorted(p.name for p in (entry / "files" / "deps").iterdir()) == ["flag"]


# --- the cache itself ------------------------------------------------------------------------


def make_files(root: Path, count: int, size: int = 10) -> None:
    (root / "big").mkdir(parents=True)
    for i in range(count):
        (root / "big" / f"f{i}").write_bytes(b"x" * size)


async def test_eviction_removes_the_least_recently_used_and_never_one_in_use(
    tmp_path: Path,
) -> None:
    cache = SetupCache(tmp_path / "cache", max_bytes=1 << 30)
    keys = [cache_key(repo="r", commands=[str(i)], runtime="sandbox", files={}) for i in range(4)]
    work = tmp_path / "wt"
    make_files(work, 10, 100)  # 1000 bytes of files an entry
    for i, key in enumerate(keys[:2]):
        await cache.store(key, work, ["big"], info={"repo": "r", "commands": [str(i)]})
        os.utime(cache.root / key / MANIFEST, (1000 + i, 1000 + i))
    found = cache.entries()
    assert [e.key for e in found] == [keys[1], keys[0]]  # most recently used first
    assert [e.files_size for e in found] == [1000, 1000]
    one = found[0].size  # on disk (blocks), its spare included
    assert found[1].size == one > 2 * 1000
    cache.max_bytes = 2 * one + one // 2  # room for two
    held = await cache.hold(keys[0])  # the least recently used, but in use
    try:
        assert [e.in_use for e in cache.entries()] == [False, True]
        await cache.store(keys[2], work, ["big"], info={})  # three do not fit: one goes
        assert {e.key for e in cache.entries()} == {keys[0], keys[2]}
        await cache.store(keys[3], work, ["big"], info={})
        assert {e.key for e in cache.entries()} == {keys[0], keys[3]}
    finally:
        held.release()
    assert sum(e.files_size for e in cache.entries()) == 2000
    # Too large for the cache at all: not kept.
    small = SetupCache(tmp_path / "small", max_bytes=500)
    assert await small.store(keys[0], work, ["big"], info={}) is None
    assert small.entries() == []


def kill_mid_build(root: Path, key: str, work: Path) -> int:
    """Start a process that builds ``key``, SIGKILL it once it is copying; its exit status."""
    script = (
        "import asyncio, sys; from pathlib import Path; from telecoder.setupcache import "
        "SetupCache; asyncio.run(SetupCache(Path(sys.argv[1]), 1 << 30).store("
        "sys.argv[2], Path(sys.argv[3]), ['big'], info={}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(root), key, str(work)], start_new_session=True
    )
    try:
        wait_for(lambda: list(root.glob(".build-*/files/big/*")), timeout=30, interval=0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    return proc.returncode


async def test_a_build_killed_half_way_is_never_used_and_the_next_build_replaces_it(
    tmp_path: Path,
) -> None:
    root, work = tmp_path / "cache", tmp_path / "wt"
    make_files(work, 2000)
    key = cache_key(repo="r", commands=["x"], runtime="sandbox", files={})
    code = await asyncio.to_thread(kill_mid_build, root, key, work)
    assert code == -signal.SIGKILL, "the build finished before it was killed"
    cache = SetupCache(root, 1 << 30)
    assert cache.entries() == []
    assert await cache.restore(key, tmp_path / "elsewhere") is None
    held = await cache.hold(key)  # the dead builder's lock went with it
    try:
        assert await cache.store(key, work, ["big"], info={}) is not None
    finally:
        held.release()
    assert not list(root.glob(".build-*"))
    target = tmp_path / "restored"
    target.mkdir()
    restored = await cache.restore(key, target)
    assert restored is not None
    assert len(list((target / "big").iterdir())) == 2000


def test_cache_list_and_clear(tmp_path: Path, home: Path) -> None:
    env = cli_env(home)
    cache = SetupCache(Settings(home=home).setup_cache_dir, 1 << 30)
    work = tmp_path / "wt"
    make_files(work, 3)
    keys = [cache_key(repo="r", commands=[str(i)], runtime="local", files={}) for i in range(3)]
    for i, key in enumerate(keys):
        asyncio.run(cache.store(key, work, ["big"], info={"repo": "acme", "commands": [str(i)]}))
    listed = telecoder("cache", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["key"] for r in rows} == set(keys)
    assert all(r["files_size"] == 30 and r["paths"] == ["big"] and not r["in_use"] for r in rows)
    assert all(r["size"] == e.size > 2 * 30 for r, e in zip(rows, cache.entries(), strict=True))
    missing = telecoder("cache", "clear", "0" * 64, env=env)
    assert missing.returncode == 3
    assert "no setup cache entry" in missing.stderr

    async def clear_while_held() -> tuple[subprocess.CompletedProcess[str], ...]:
        held = await cache.hold(keys[1])  # a session restoring it
        try:
            one = await asyncio.to_thread(telecoder, "cache", "clear", keys[1], env=env)
            every = await asyncio.to_thread(telecoder, "cache", "clear", "--json", env=env)
            return one, every
        finally:
            held.release()

    busy, rest = asyncio.run(clear_while_held())
    assert busy.returncode == 4
    assert "is in use" in busy.stderr
    assert rest.returncode == 0
    assert json.loads(rest.stdout) == {"removed": sorted([keys[0], keys[2]]), "in_use": [keys[1]]}
    table = telecoder("cache", "list", env=env)
    assert keys[1][:12] in table.stdout
    [left] = cache.entries()
    assert f"1 entries, {size_text(left.size)} of 10.0G" in table.stderr  # the spare included


def test_cache_max_takes_a_size_and_zero_turns_the_cache_off(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).cache_max == 10 << 30
    assert Settings(home=tmp_path, cache_max="500M").cache_max == 500 << 20
    off = Settings(home=tmp_path, cache_max="0")
    assert off.cache_max == 0
    assert not SetupCache(off.setup_cache_dir, off.cache_max).enabled
    with pytest.raises(ValueError, match="not a size"):
        Settings(home=tmp_path, cache_max="lots")


def test_the_key_includes_lockfiles_anywhere_and_the_named_paths() -> None:
    assert depends_on("package-lock.json")
    assert depends_on("web/yarn.lock")
    assert depends_on("requirements-dev.txt")
    assert depends_on("sub/pyproject.toml")
    assert not depends_on("README.md")
    assert not depends_on("src/app.py")
    assert depends_on("deps.txt", ["deps.txt"])
    assert depends_on("tools/x/y.cfg", ["tools"])
    assert depends_on("ci/a.lock", ["ci/*.lock"])
    assert not depends_on("ci/a.txt", ["ci/*.lock"])
    base = {"repo": "https://x@github.com/a/b", "commands": ["npm ci"], "runtime": "sandbox"}
    key = cache_key(**base, files={"package-lock.json": "1"})
    other_token = {**base, "repo": "https://y@github.com/a/b"}  # credentials are not the repo
    assert key == cache_key(**other_token, files={"package-lock.json": "1"})
    assert key != cache_key(**base, files={"package-lock.json": "2"})
    assert key != cache_key(**{**base, "runtime": "docker"}, files={"package-lock.json": "1"})
    assert key != cache_key(**{**base, "commands": ["npm i"]}, files={"package-lock.json": "1"})


async def test_the_api_lists_the_servers_host_entries(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    cache = SetupCache(settings.setup_cache_dir, settings.cache_max)
    make_files(tmp_path / "wt", 2)
    key = cache_key(repo="r", commands=["make"], runtime="sandbox", files={})
    await cache.store(key, tmp_path / "wt", ["big"], info={"repo": "acme", "commands": ["make"]})
    async with client(create_app(settings, store)) as c:
        found = await c.get("/api/cache")
    assert found.status_code == 200
    [entry] = found.json()
    assert entry == {**entry, "key": key, "files_size": 20, "paths": ["big"], "repo": "acme"}
    assert entry["size"] == cache.entries()[0].size > 2 * 20
    assert entry["commands"] == ["make"]
    assert entry["in_use"] is False


async def spare_of(cache: SetupCache, key: str) -> Path:
    spare = cache.root / key / "spare"
    for _ in range(1500):  # made in the background, by a process of its own
        if spare.is_dir():
            return spare
        await asyncio.sleep(0.02)
    raise AssertionError("no spare was made")


async def test_a_hit_moves_in_the_spare_made_in_the_background_and_a_new_one_follows(
    tmp_path: Path,
) -> None:
    """After an entry is made, a copy of its files is made beside it; the next restore moves
    that copy in (the same inodes: no copy on the way to the agent), never the entry's own
    files, and a new spare is made for the hit after it. A removed entry takes its spare."""
    cache = SetupCache(tmp_path / "cache", max_bytes=10**9)
    key = cache_key(repo="r", commands=["c"], runtime="sandbox", files={})
    work = tmp_path / "wt"
    make_files(work, 50)
    held = await cache.hold(key)
    await cache.store(key, work, ["big"], info={})
    held.release()
    spare = await spare_of(cache, key)
    inode = (spare / "big" / "f7").stat().st_ino
    for n in (1, 2):
        new = tmp_path / f"wt{n}"
        new.mkdir()
        held = await cache.hold(key)
        try:
            restored = await cache.restore(key, new)
        finally:
            held.release()
        assert restored is not None
        assert restored.paths == ("big",)
        assert (new / "big" / "f7").stat().st_ino == inode  # moved, not copied
        assert inode != (cache.root / key / "files" / "big" / "f7").stat().st_ino
        assert sorted(p.name for p in (new / "big").iterdir()) == sorted(f"f{i}" for i in range(50))
        (new / "big" / "f7").write_text("the agent's\n")  # never reaches the entry
        assert (cache.root / key / "files" / "big" / "f7").read_bytes() == b"x" * 10
        inode = (await spare_of(cache, key) / "big" / "f7").stat().st_ino
    assert cache.clear(key) == ([key], [])
    assert not (cache.root / key).exists()


async def test_an_entry_cleared_while_its_spare_is_made_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    cache = SetupCache(tmp_path / "cache", max_bytes=10**9)
    keep, gone = (cache_key(repo="r", commands=[c], runtime="sandbox", files={}) for c in "ab")
    work = tmp_path / "wt"
    make_files(work, 2000)
    await cache.store(keep, work, ["big"], info={})
    await spare_of(cache, keep)
    await cache.store(gone, work, ["big"], info={})  # its spare starts at once
    assert cache.clear(gone) == ([gone], [])  # not held up by the copy under way
    await setupspare.made(cache.root / "locks" / f"{gone}.spare")
    left = sorted(p.name for p in cache.root.iterdir())
    assert left == [keep, "locks"]
    assert len(list((cache.root / keep / "spare" / "big").iterdir())) == 2000


def du(path: Path) -> int:
    """What ``path`` takes on disk, in bytes, as ``du`` counts it."""
    done = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[0])


async def test_the_limit_bounds_the_real_disk_use_the_spares_included(tmp_path: Path) -> None:
    """``TELECODER_CACHE_MAX`` bounds what the cache directory takes on disk (``du``): each
    entry counts with its spare, a copy as large as its files, and by its blocks — not its
    files' bytes once, which let the cache take twice the limit and more."""
    cache = SetupCache(tmp_path / "cache", max_bytes=1 << 30)
    keys = [cache_key(repo="r", commands=[str(i)], runtime="sandbox", files={}) for i in range(5)]
    work = tmp_path / "wt"
    make_files(work, 20, 4000)  # 80,000 bytes of files an entry

    async def settled() -> list[Any]:
        """The entries once their spares are made (as they are between sessions)."""
        found = cache.entries()
        for entry in found:
            await spare_of(cache, entry.key)
            await setupspare.made(cache.root / "locks" / f"{entry.key}.spare")
        return found

    await cache.store(keys[0], work, ["big"], info={})
    [entry] = await settled()
    assert entry.size == du(entry.path)  # what `cache list` shows is what the disk holds
    assert entry.size > 2 * entry.files_size
    limit = cache.max_bytes = 2 * entry.size + entry.size // 2  # room for two, not three
    for key in keys[1:]:
        await cache.store(key, work, ["big"], info={})
        kept = await settled()
        assert du(cache.root) <= limit, [e.key for e in kept]
    assert [e.key for e in cache.entries()] == [keys[4], keys[3]]
    assert 3 * entry.files_size < limit  # three would have fitted, counted the old way


async def test_a_spare_still_being_made_is_waited_for_a_while_then_the_hit_copies(
    tmp_path: Path,
) -> None:
    """A spare copy that crawls (idle priority on a busy machine; here its lock held) keeps a
    hit waiting ``spare_wait`` seconds at most: then it copies the entry's files itself, and the
    spare serves a later hit."""
    cache = SetupCache(tmp_path / "cache", max_bytes=10**9, spare_wait=0.5)
    key = cache_key(repo="r", commands=["c"], runtime="sandbox", files={})
    work = tmp_path / "wt"
    make_files(work, 20)
    held = await cache.hold(key)
    await cache.store(key, work, ["big"], info={})
    held.release()
    await spare_of(cache, key)
    lock = cache.root / "locks" / f"{key}.spare"
    assert await setupspare.made(lock, wait=5)
    crawling = os.open(lock, os.O_RDWR)  # holds the spare's lock, as a copy under way does
    fcntl.flock(crawling, fcntl.LOCK_EX)
    try:
        assert not await setupspare.made(lock, wait=0.1)
        new = tmp_path / "wt1"
        new.mkdir()
        started = time.monotonic()
        held = await cache.hold(key)
        try:
            restored = await cache.restore(key, new)
        finally:
            held.release()
        took = time.monotonic() - started
    finally:
        os.close(crawling)
    assert restored is not None
    assert 0.5 <= took < 5.0
    spare = cache.root / key / "spare" / "big" / "f7"
    assert (new / "big" / "f7").stat().st_ino != spare.stat().st_ino  # copied: the spare stays
    assert sorted(p.name for p in (new / "big").iterdir()) == sorted(f"f{i}" for i in range(20))
