"""The fake GitHub's HTTP side: one handler thread per connection, REST as JSON, job logs as
text, git over smart HTTP through ``git http-backend``."""

from __future__ import annotations

import base64
import binascii
import json
import re
import subprocess
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.github_models import DOCS, Request, _git_env, _Refusal

if TYPE_CHECKING:
    from tests.fakes.github import FakeGitHub

_GIT = re.compile(r"^/(?P<owner>[^/]+)/(?P<name>[^/]+?)\.git(?P<rest>/.*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeGitHub:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        raw = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        git = _GIT.match(parts.path)
        try:
            payload = json.loads(raw) if raw and git is None else None
        except ValueError:
            payload = None
        request = Request(self.command, parts.path, dict(parse_qsl(parts.query)), headers, payload)
        with self.fake._lock:
            self.fake.requests.append(request)
        if git is not None:
            self._serve_git(git["owner"], git["name"], git["rest"], parts.query, raw)
        else:
            self._serve_api(request)

    def _serve_api(self, request: Request) -> None:
        fake = self.fake
        fake._run_hooks(request.method, request.path)
        failure = fake._take_failure()
        if failure is not None:
            if failure.disconnect:
                self.close_connection = True
                return
            body = {"message": failure.message, "documentation_url": DOCS}
            self._send(failure.status, body, failure.headers)
            return
        if (log := fake.job_log(request.path)) is not None:
            self._send_raw(200, {"Content-Type": "text/plain; charset=utf-8"}, log.encode())
            return
        if request.path.startswith("/app/") or request.path.endswith("/installation"):
            self._send(*fake._app_request(request))
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not fake.accepts(token):
            self._send(401, {"message": "Bad credentials", "documentation_url": DOCS})
            return
        if (ci := fake.ci_api(request.path)) is not None:
            self._send(ci[0], ci[1], ci[2])
            return
        try:
            answer = fake._handle(request.method, request.path, request.query, request.json)
        except _Refusal as refusal:
            self._send(refusal.status, refusal.body)
            return
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        self._send(status, body)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorized_for_git(self) -> bool:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(credentials).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self.fake.accepts(password)

    def _serve_git(self, owner: str, name: str, rest: str, query: str, body: bytes) -> None:
        with self.fake._lock:
            repo = self.fake._repos.get((owner, name))
        if repo is None or repo.git_dir is None:
            self._send_raw(404, {"Content-Type": "text/plain"}, b"Repository not found.\n")
            return
        if not self._authorized_for_git():
            headers = {"Content-Type": "text/plain", "WWW-Authenticate": 'Basic realm="GitHub"'}
            self._send_raw(401, headers, b"Authentication failed\n")
            return
        env = {
            **_git_env(),
            "GIT_PROJECT_ROOT": str(repo.git_dir),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": rest,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key] = value.strip()
        self._send_raw(status, headers, payload)

    def _send_raw(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
