"""The command line starts lean: `telecoder --help` and `telecoder run --detach --server URL`
import neither the database, the web stack, the gateway nor the embedding model (issue 16:
every 100 ms of start-up is paid by each submission and by each of the suite's hundreds of
`telecoder` processes). Each check runs in a fresh interpreter, as the command does."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
import typer.main
from typer._click.utils import make_default_short_help

from telecoder.cli import COMMANDS, app
from telecoder.cli import submit as lean_submit
from telecoder.errors import BadInput, ServerUnavailable, SessionNotFound, Unauthorized

HEAVY = (
    "sqlalchemy",
    "aiosqlite",
    "fastapi",
    "uvicorn",
    "httpx",
    "pydantic",
    "rich",
    "wordllama",
    "telecoder.gateway.proxy",
    "telecoder.store",
    "telecoder.settings",
    "telecoder.bestof",
)

SCRIPT = """
import json, sys
sys.argv = ["telecoder", *json.loads(sys.argv[1])]
from telecoder.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
heavy = {heavy!r}
print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}))
"""


def run_cli(*args: str) -> dict[str, Any]:
    code = SCRIPT.format(heavy=list(HEAVY))
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_imports_nothing_heavy() -> None:
    assert run_cli("--help") == {"code": 0, "loaded": []}


def test_run_detach_with_a_server_imports_nothing_heavy() -> None:
    url = f"http://127.0.0.1:{closed_port()}"  # nobody listens: the request fails, exit 6
    args = ("run", "true", "--repo", ".", "--engine", "shell", "--detach", "--json")
    assert run_cli(*args, "--server", url) == {"code": 6, "loaded": []}


def test_the_listed_summaries_are_the_commands_own() -> None:
    group: Any = typer.main.get_command(app)
    assert group.list_commands(None) == list(COMMANDS)
    for name, (_, _, summary) in COMMANDS.items():
        command = group.get_command(None, name)
        assert command is not None
        assert command.get_short_help_str(200) == make_default_short_help(summary, 200), name


class Answers(BaseHTTPRequestHandler):
    replies: ClassVar[dict[str, tuple[int, bytes]]] = {}
    received: ClassVar[list[tuple[str, dict[str, Any], str | None]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.append((self.path, body, self.headers.get("authorization")))
        status, reply = self.replies[body["prompt"]]
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_lean_submit_posts_once_and_maps_errors_as_the_client_does(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTPS_PROXY", "all_proxy", "HTTP_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    Answers.replies = {
        "ok": (201, json.dumps({"id": "abc", "warnings": ["w"]}).encode()),
        "bad": (422, b'{"detail": "no such engine"}'),
        "who": (401, b'{"detail": "bad token"}'),
        "gone": (404, b'{"detail": "nothing"}'),
        "down": (503, b"<html>"),
        "odd": (200, b"<html>"),
    }
    body = lean_submit.session_body(
        prompt="ok", repo=".", engine="shell", model=None, base=None, forge=None,
        priority=0, timeout=None,
    )  # fmt: skip
    assert lean_submit.create(api + "/", body, token="t0k") == {"id": "abc", "warnings": ["w"]}
    path, sent, auth = Answers.received[-1]
    assert (path, auth) == ("/api/sessions", "Bearer t0k")
    assert sent == {"prompt": "ok", "repo": lean_submit.absolute("."), "engine": "shell",
                    "priority": 0}  # fmt: skip
    with pytest.raises(BadInput, match="no such engine"):
        lean_submit.create(api, {**body, "prompt": "bad"}, token=None)
    with pytest.raises(Unauthorized, match="bad token"):
        lean_submit.create(api, {**body, "prompt": "who"}, token=None)
    with pytest.raises(SessionNotFound):
        lean_submit.create(api, {**body, "prompt": "gone"}, token=None)
    with pytest.raises(ServerUnavailable, match="HTTP 503"):
        lean_submit.create(api, {**body, "prompt": "down"}, token=None)
    with pytest.raises(ServerUnavailable, match="without JSON"):
        lean_submit.create(api, {**body, "prompt": "odd"}, token=None)
    with pytest.raises(BadInput):
        lean_submit.create("ftp://example.com", body, token=None)
    # What only the full client does: credentials in the URL, a proxy.
    assert lean_submit.create(api.replace("://", "://me:pw@"), body, token=None) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert lean_submit.create(api, body, token=None) is None
