"""A small Slack Web API on 127.0.0.1: ``conversations.open`` and ``chat.postMessage``, as
Slack speaks them (form or JSON bodies, ``Authorization: Bearer xoxb-…``, ``{"ok": …}``
answers; a bad token is ``{"ok": false, "error": "invalid_auth"}`` with HTTP 200, like Slack).

Enough for notifications: a direct message is opened to a user (``D…`` channel) and posted.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class Call:
    method: str
    body: dict[str, Any]


class FakeSlackWeb:
    def __init__(self, token: str = "xoxb-test-token") -> None:
        self.token = token
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._ts = 1000

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def posted(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.body for c in self.calls if c.method == "chat.postMessage"]

    def __enter__(self) -> FakeSlackWeb:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length).decode()
                if self.headers.get("content-type", "").startswith("application/json"):
                    body = json.loads(raw or "{}")
                else:
                    body = dict(parse_qsl(raw))
                method = self.path.rsplit("/", 1)[-1]
                answer = fake._answer(method, self.headers.get("authorization", ""), body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, auth: str, body: dict[str, Any]) -> dict[str, Any]:
        if auth != f"Bearer {self.token}":
            return {"ok": False, "error": "invalid_auth"}
        with self._lock:
            self.calls.append(Call(method, body))
            self._ts += 1
            ts = f"{self._ts}.000100"
        if method == "conversations.open":
            users = str(body.get("users") or "")
            if not users.startswith(("U", "W")):
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "channel": {"id": "D" + users[1:]}}
        if method == "chat.postMessage":
            if not body.get("channel") or not body.get("text"):
                return {"ok": False, "error": "no_text"}
            return {"ok": True, "channel": body["channel"], "ts": ts}
        return {"ok": False, "error": "unknown_method"}
