"""A webhook receiver on 127.0.0.1: the subscriber end of TeleCoder's notifications.

It records every POST (headers and raw body) and answers ``status`` (200 by default). ``stop()``
closes its port, so a sender sees the connection refused, as with a subscriber that is down;
``start()`` listens again on the same port. ``events`` are the bodies it verified with the
reference Standard Webhooks implementation (``standardwebhooks``), by webhook-id, so a
duplicate shows as a second entry under the same id.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import standardwebhooks


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, secret: str | None = None, *, status: int = 200) -> None:
        self.secret = secret
        self.status = status
        self.received: list[Received] = []
        self.verified: dict[str, list[Any]] = {}
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(Received(headers, body))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)
            if self.status >= 300 or self.secret is None:
                return
            try:
                data = standardwebhooks.Webhook(self.secret).verify(received.body, received.headers)
            except standardwebhooks.WebhookVerificationError as e:
                self.rejected.append(str(e))
                return
            self.verified.setdefault(received.headers["webhook-id"], []).append(data)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
