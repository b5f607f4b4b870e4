"""Schemathesis against ``/openapi.json`` of a real server: no generated request gets a 5xx.

The server runs in a thread of its own (uvicorn, its own event loop) on SQLite and on
PostgreSQL — where NUL characters and oversized integers are the classic 5xx.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr

from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import open_store
from tests.conftest import make_repo
from tests.server import until

TOKEN = "fuzz-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}


class ServerThread(threading.Thread):
    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.sock = sock
        self.ready = threading.Event()
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to the test thread
            self.error = e
            self.ready.set()

    async def _serve(self) -> None:
        store = await open_store(self.settings.store_url)
        try:
            app = create_app(self.settings, store)
            config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
            self.server = uvicorn.Server(config)
            serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
            server = self.server
            await until(lambda: server.started or serving.done(), seconds=30)
            self.ready.set()
            await serving
        finally:
            await store.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> str:
    return str(make_repo(tmp_path_factory.mktemp("fuzz-repo")).path)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def base_url(request: pytest.FixtureRequest, tmp_path_factory, repo: str) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        database = f"sqlite:///{root / 'telecoder.db'}"
    else:
        database = request.getfixturevalue("pg_module_url")
    fuzz_settings = Settings(
        home=root / "home",
        database_url=database,
        api_token=SecretStr(f"fuzz:{TOKEN}"),
        rate_limit_per_minute=0,
        engine="shell",  # module-scoped: before the tests' own TELECODER_DEFAULT_ENGINE
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = ServerThread(fuzz_settings, sock)
    server.start()
    server.ready.wait(30)
    if server.error is not None:
        raise server.error
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # Something to find: a session the generated ids may hit by prefix.
    import httpx

    httpx.post(
        f"{base}/api/sessions",
        json={"repo": repo, "prompt": "echo hi"},
        headers=HEADERS,
    ).raise_for_status()
    yield base
    assert server.server is not None
    server.server.should_exit = True
    server.join(15)


@pytest.fixture(scope="module")
def pg_module_url(pg_template: str) -> Iterator[str]:
    import uuid

    import psycopg

    from tests.conftest import PG_ADMIN_URL

    name = f"telecoder_fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_real_repo(case, use: bool, *, repo: str):
    """Half the submissions name a real repository and leave the rest of what the intake checks
    against the world (engine, base ref) to defaults, so they get through to the store."""
    if use and isinstance(case.body, dict) and isinstance(case.body.get("repo"), str):
        kept = {k: v for k, v in case.body.items() if k not in ("engine", "agent", "base")}
        case.body = {**kept, "repo": repo}
    return case


def without_long_polls(case):
    """A valid ``wait`` (the inbox's long-polls) becomes 0: nothing lands for a generated agent,
    so each of the examples would wait it out. The long-polls themselves are tested in
    test_cli_inbox_remote.py; here the rest of the request is what is fuzzed."""
    for part in (case.query, case.body):
        wait = part.get("wait") if isinstance(part, dict) else None
        if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 25:
            part["wait"] = 0
    return case


# The suite's time is bounded, not the routes': each (database, mode) pair gets about BUDGET
# generated requests, spread evenly over the routes (at least MIN_EXAMPLES each, at most
# MAX_EXAMPLES), in SHARDS tests that pytest-xdist runs on different workers. Every route is in
# exactly one shard (its index modulo SHARDS); generation is derandomized, so a run is repeatable.
BUDGET = 900
MIN_EXAMPLES = 10
MAX_EXAMPLES = 60
SHARDS = 3
LIMIT = Settings.model_fields["max_body_bytes"].default


def sent_size(body: object) -> int:
    """About how many bytes ``body`` takes on the wire: JSON escapes every non-ASCII character
    (``"\\u00a1"``: 6 bytes for what ``repr`` shows as one)."""
    return max(len(repr(body)), len(json.dumps(body, default=str)))


def examples_per_route(routes: int) -> int:
    return max(MIN_EXAMPLES, min(MAX_EXAMPLES, BUDGET // max(routes, 1)))


@pytest.mark.parametrize("shard", range(SHARDS), ids=[f"shard{i}" for i in range(SHARDS)])
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_no_generated_request_gets_a_server_error(
    base_url: str, repo: str, mode, shard: int
) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7 * SHARDS
    examples = examples_per_route(len(operations))
    mine = operations[shard::SHARDS]
    failures: list[str] = []
    tested = 0
    for operation in mine:
        strategy = st.tuples(operation.as_strategy(generation_mode=mode), st.booleans()).map(
            lambda pair: without_long_polls(with_real_repo(*pair, repo=repo))
        )

        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case) -> None:
            try:
                response = case.call(base_url=base_url, headers=HEADERS, timeout=10)
            except requests.exceptions.RequestException:
                # A body over the limit is refused (413) before it is read, and the connection
                # closed: a client still sending may see the close instead of the answer.
                if sent_size(case.body) <= LIMIT:
                    raise
                return
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {case.as_curl_command()}")

        try:
            call()
        except Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): only negative mode says so.
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
            continue
        tested += 1
    assert tested >= (len(mine) if mode == schemathesis.GenerationMode.POSITIVE else 2)
    assert not failures, "\n".join(failures[:20])
