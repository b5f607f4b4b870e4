"""The command line starts lean: `telecoder --help` and `telecoder run --detach --server URL`
import neither the database, the web stack, the gateway nor the embedding model (issue 16:
every 100 ms of start-up is paid by each submission and by each of the suite's hundreds of
`telecoder` processes). Each check runs in a fresh interpreter, as the command does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import typer.main
from typer._click.utils import make_default_short_help

from telecoder import submit as lean_submit
from telecoder.cli import COMMANDS, app
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
    "http.client",  # over plain http the lean submit writes its request on a socket
    "ssl",
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


def test_the_lean_submit_reads_chunked_answers_and_reports_cut_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    replies = [
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"id"\r\n8;x=y\r\n: "abc"}\r\n0\r\n\r\n',
        b'HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\n{"id": ',
        b"",
    ]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            for reply in replies:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(reply)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert lean_submit.create(url, {"prompt": "p"}, token=None) == {"id": "abc"}
        with pytest.raises(ServerUnavailable, match="ended early"):
            lean_submit.create(url, {"prompt": "p"}, token=None)
        with pytest.raises(ServerUnavailable, match="closed unanswered"):
            lean_submit.create(url, {"prompt": "p"}, token=None)
        thread.join(5)


LAUNCH = """
import json, sys
sys.argv = ["telecoder", *json.loads(sys.argv[1])]
from telecoder.{entry} import main
try:
    main()
except SystemExit as e:
    code = e.code
sys.stdout.flush()
lean = ["typer", "typing", "dataclasses", "re", "http.client", "ssl", "pathlib", "telecoder.cli"]
loaded = [m for m in lean if m in sys.modules]
sys.stderr.write("\\n" + json.dumps({{"code": code, "loaded": loaded}}))
"""


def launched(entry: str, args: list[str], env: dict[str, str]) -> tuple[str, str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH.format(entry=entry), json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    stderr, _, last = done.stderr.rpartition("\n")
    return done.stdout, stderr, json.loads(last)


def test_the_entry_point_submits_without_the_cli_and_answers_as_the_cli_does(api: str) -> None:
    """launch.py's quick submit skips typer (~45 ms) yet prints and exits exactly as the CLI."""
    Answers.replies = {
        "ok": (201, json.dumps({"id": "abc", "warnings": [], "status": "queued"}).encode()),
        "who": (401, b'{"detail": "bad token"}'),
        "bad": (422, b'{"detail": "no such engine"}'),
    }
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("TELECODER_SERVER", None)
    common = ["--repo", ".", "-e", "shell", "--priority", "-2", "--max-time", "2m", "--step=s1"]
    cases = [
        ["run", "ok", *common, "--detach", "--server", api, "--notify", "slack:@x"],
        ["run", "ok", *common, "-d", "--json", "--server", api, "--budget", "1.5"],
        ["run", "who", *common, "--detach", "--json", "--server", api],
        ["run", "bad", *common, "--detach", "--server", api, "--tier", "trivial"],
    ]
    codes = []
    for args in cases:
        Answers.received.clear()
        quick_out, quick_err, quick = launched("launch", args, env)
        cli_out, cli_err, cli = launched("cli", args, env)
        assert (quick_out, quick_err, quick["code"]) == (cli_out, cli_err, cli["code"]), args
        assert len(Answers.received) == 2, args
        assert Answers.received[0] == Answers.received[1], args
        # Only an error's report imports the CLI.
        assert ("typer" in quick["loaded"]) is (quick["code"] != 0), args
        codes.append(quick["code"])
    assert codes == [0, 0, 7, 2]
    _, sent, _ = Answers.received[-1]
    assert sent == {"steps": ["s1"], "repo": os.getcwd(), "prompt": "bad", "engine": "shell",
                    "priority": -2, "timeout_seconds": 120.0, "mode": "task",
                    "tier": "trivial"}  # fmt: skip
    # --server from the environment, as the CLI reads it; what the quick path leaves out
    # (re comes with json and urllib; amounts' dataclasses with --max-time or --budget only).
    plain = launched("launch", ["run", "ok", "-r", ".", "-d"], {**env, "TELECODER_SERVER": api})
    assert plain == ("abc\n", "", {"code": 0, "loaded": ["re"]})


def test_the_quick_submit_leaves_to_the_cli_what_it_does_not_know() -> None:
    from telecoder.launch import quick_submit

    url = "http://127.0.0.1:9"  # nothing is sent: a request would fail, not answer None
    base = ["run", "p", "--repo", ".", "--detach", "--server", url]
    for extra in (
        ["--help"], ["--template", "t"], ["--repo", "other"], ["--priority", "1_0"],
        ["--timeout", "0.5"], ["--timeout", "1", "--max-time", "2m"], ["--budget", "lots"],
        ["--json=1"], ["-dr", "x"], ["--"], ["second prompt"], ["--server", ""], ["--attempts"],
    ):  # fmt: skip
        assert quick_submit([*base, *extra]) is None, extra
    assert quick_submit(["run", "p", "--repo", ".", "--server", url]) is None  # not detached
    assert quick_submit(["list", "--server", url]) is None


def test_the_lean_submit_makes_paths_absolute_as_pathlib_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for repo in (".", "", "a", "a/./b/", "./a//b/.", "../x", "a/..", "/a//b/./", "//a/b",
                 "///a", "/", "~/x", "~", "a/~b", "/a/.../b", "a b/ç"):  # fmt: skip
        assert lean_submit.absolute(repo) == str(Path(repo).expanduser().absolute()), repo
    assert lean_submit.absolute("https://example.com/r.git") == "https://example.com/r.git"
