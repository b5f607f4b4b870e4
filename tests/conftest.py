"""Shared fixtures: settings, a store on SQLite *and* PostgreSQL, git repos with bare remotes."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from telecoder.settings import Settings
from telecoder.store import Store, open_store
from tests.docker_support import PodmanService, podman_service
from tests.fakes.github import fake_github  # noqa: F401
from tests.fakes.model_server import FakeModelServer
from tests.fakes.slack import fake_slack  # noqa: F401
from tests.fakes.telegram import fake_telegram  # noqa: F401

PG_ADMIN_URL = os.environ.get("TELECODER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "user@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "user@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the package once, before any worker starts: with PYTHONDONTWRITEBYTECODE set
    (as on the CI machines) nothing else writes the .pyc files, and every ``telecoder``
    subprocess the suite starts would compile each module it imports again (~0.1 s CPU a run)."""
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        import compileall

        import telecoder

        compileall.compile_dir(Path(telecoder.__file__).parent, quiet=1, workers=1)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``long`` tests first (a stable sort: the rest keep their order). Under pytest-xdist's
    worksteal the other workers take the short tests queued behind them, so no minute-long
    test starts last and leaves one worker running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


@dataclass
class GitRepo:
    """A user's checkout (``path``) whose ``origin`` is a bare repository (``remote``)."""

    path: Path
    remote: Path

    def git(self, *args: str) -> str:
        return git(*args, cwd=self.path)

    def remote_git(self, *args: str) -> str:
        return git(*args, cwd=self.remote)


def make_repo(root: Path, name: str = "repo", files: dict[str, str] | None = None) -> GitRepo:
    remote = root / "remotes" / "acme" / f"{name}.git"
    remote.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", "main", str(remote))
    path = root / name
    git("init", "-q", "-b", "main", str(path))
    for rel, content in (files or {"README.md": "The colour of magic.\n"}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(content)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    git("remote", "add", "origin", str(remote), cwd=path)
    git("push", "-q", "origin", "main", cwd=path)
    return GitRepo(path=path, remote=remote)


@pytest.fixture(autouse=True)
def shell_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run the prompt as a shell command when they name no engine: an operator's choice
    (TELECODER_DEFAULT_ENGINE), made here for every test; tests of the choice itself unset it."""
    monkeypatch.setenv("TELECODER_DEFAULT_ENGINE", "shell")


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual umask, 022, which lets group and others read: TeleCoder's own files must not
    depend on the umask of the process that embeds it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def shared_bits(root: Path) -> dict[str, str]:
    """Every path under ``root`` (itself included) that grants group or others anything."""
    paths = [root, *root.rglob("*")]
    return {
        str(p.relative_to(root)): oct(mode & 0o777)
        for p in paths
        if not p.is_symlink() and (mode := p.stat().st_mode) & 0o077
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, lease_seconds=5, heartbeat_seconds=0.5, poll_seconds=0.05)


# --- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for this test run; each test clones it."""
    import asyncio

    name = f"telecoder_tmpl_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    async def migrate() -> None:
        store = await open_store(url)
        await store.close()

    asyncio.run(migrate())
    yield name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"telecoder_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'telecoder.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = await open_store(db_url, lease_seconds=5)
    yield store
    await store.close()


# --- agent CLIs and the fake model server ----------------------------------------------------


@pytest.fixture(scope="session")
def agent_tools() -> Path:
    """The pinned agent CLIs, installed by the test run itself (a no-op when already there)."""
    from tests.engine_driver import ROOT, TOOLS_BIN

    subprocess.run([str(ROOT / "scripts" / "install-agents.sh")], check=True)
    return TOOLS_BIN


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


# --- a Docker Engine API (podman's), for the docker runtime ----------------------------------


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanService]:
    """``podman system service`` on a socket of its own, with the test image (docker_support).

    Its directory is a short one of its own under /tmp: podman refuses a run root longer than 50
    characters, and a parallel worker's temporary directory (``.../popen-gw1/...``) is longer.
    """
    with (
        tempfile.TemporaryDirectory(
            prefix="tc-podman-", dir="/tmp", ignore_cleanup_errors=True
        ) as root,
        podman_service(Path(root)) as service,
    ):
        yield service
