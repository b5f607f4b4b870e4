"""A scripted model server on 127.0.0.1 that speaks the wire protocols the agent CLIs use.

Protocols (wire formats in ``model_protocols``): Anthropic Messages (``/v1/messages``, SSE or
JSON), OpenAI Chat Completions (``/v1/chat/completions``, SSE with a usage chunk and ``[DONE]``,
or JSON), OpenAI Responses (``/v1/responses``, SSE, or JSON when ``"stream": false``), Gemini
(``…:streamGenerateContent?alt=sse`` and ``…:generateContent``) and Ollama's native API
(``/api/chat``, ``/api/generate``: NDJSON, or JSON when ``"stream": false``). Model discovery:
``GET /v1/models`` (a list both OpenAI and Anthropic clients read), Gemini's
``GET /v1beta/models`` and Ollama's ``GET /api/tags`` list ``models``.

The server is stateless across requests: each answer is chosen from the request itself.

- A **script** is a list of ``Reply`` turns. The turn to play is the number of tool results the
  request holds after the user message that selected the script (research §11: "a request with
  no tool result yet gets the tool call, otherwise the final text").
  With ``count_replies`` it is the number of assistant messages after it instead (Chat
  Completions and Ollama): for agents that send observations back as user messages (a model
  without native tool calls writes them as text).
- ``scripts`` maps a marker to a script: the latest user message containing a marker selects it
  (a follow-up prompt after a resume starts its own script); otherwise ``default`` plays.
- A ``Reply`` with ``command`` calls the CLI's own shell tool (chosen by name among the tools
  the request offers: ``Bash``, ``bash``, ``exec_command``, ``run_shell_command``, ``shell``).
  A request that does not offer that tool (titles, commit messages, side queries) gets the
  reply's text, or ``"Fake title"`` when the reply needs the tool.
- Errors on demand: ``Reply(error=400)``, or any path under ``/err400/``, ``/err500/``.
  Slowness: ``Reply(delay=…)`` or a path under ``/slow/`` (waits ``slow_seconds``).
- Usage: each answer reports ``Reply(usage=…)`` or else the server's ``usage`` (120 input and 15
  output tokens by default; make answers expensive or cached with ``Usage(…)``); ``reported``
  lists what each answer reported, normalised (``Reported``).
- Every request is recorded (``requests``); model requests also in ``log`` with the times they
  arrived and were answered, and the status.
- ``reject_tools``: a chat request offering ``tools`` gets the 400 a server without tool calls
  answers (as Ollama does for a model without them, or vLLM without a tool parser).
- ``reject_response_format``: a chat completion asking for ``response_format`` gets the 400 a
  server without structured output answers (as older vLLM, llama.cpp or Ollama builds do).
- Rate limits on demand: ``limit_for(seconds, retry_after)`` answers every model request with
  429 and ``Retry-After`` from the first one after it for ``seconds``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.model_protocols import (
    ANSWER,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    SHELL_TOOLS,
    Reported,
    Turn,
    Usage,
    parse,
    protocol_of,
)

__all__ = [
    "DEFAULT_SCRIPT",
    "INPUT_TOKENS",
    "OUTPUT_TOKENS",
    "FakeModelServer",
    "Recorded",
    "Reply",
    "Reported",
    "Usage",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One model turn."""

    text: str = ""
    thinking: str | None = None
    command: str | None = None  # call the CLI's shell tool with this command
    tool: str | None = None  # or call this tool ...
    args: dict[str, Any] | None = None  # ... with these arguments
    error: int | None = None  # answer with this HTTP status instead
    delay: float = 0.0  # seconds before answering
    usage: Usage | None = None  # what this answer reports (default: the server's)

    @property
    def calls_tool(self) -> bool:
        return self.command is not None or self.tool is not None


DEFAULT_SCRIPT: tuple[Reply, ...] = (
    Reply(text="I'll create the file.", command="echo hello-from-fake > fake.txt && cat fake.txt"),
    Reply(text="All done: created fake.txt."),
)


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class Logged:
    """A model request: when it arrived, when it was answered (``time.time``), with what."""

    path: str
    arrived: float
    answered: float = 0.0
    status: int = 0
    tag: str | None = None  # the request's x-test-tag header: which client sent it


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (a cancelled agent) is no error of the server's


@dataclass
class FakeModelServer:
    default: Sequence[Reply] = DEFAULT_SCRIPT
    scripts: dict[str, Sequence[Reply]] = field(default_factory=dict)
    slow_seconds: float = 60.0
    usage: Usage = field(default_factory=Usage)  # what answers report unless a Reply says
    models: Sequence[str] = ("fake-model",)  # what model discovery lists
    requests: list[Recorded] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)
    reported: list[Reported] = field(default_factory=list)  # the usage of each answer, in order
    reject_response_format: bool = False  # 400 for a chat completion with response_format
    reject_tools: bool = False  # 400 for a chat request with tools
    count_replies: bool = False  # a script's turn: assistant messages, not tool results

    def __post_init__(self) -> None:
        self._limit: tuple[float, str] | None = None  # (seconds, Retry-After) armed
        self._limited_until = 0.0
        self._retry_after = "0"
        self._stopping = threading.Event()
        self._asked = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeModelServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers for tests ----------------------------------------------------------------

    def model_requests(self) -> list[Recorded]:
        """Requests that asked the model for a completion (not token counts or listings)."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and protocol_of(urlsplit(r.path).path) is not None
        ]

    def wait_for_model_request(self, timeout: float) -> bool:
        """Block until a model request arrives (for a test to act while the agent waits)."""
        return self._asked.wait(timeout)

    def limit_for(self, seconds: float, retry_after: str) -> None:
        """Answer model requests 429 (``Retry-After: retry_after``) for ``seconds`` from the
        next one."""
        with self._lock:
            self._limit = (seconds, retry_after)

    def _limited(self, now: float) -> str | None:
        """The Retry-After to answer a model request arriving ``now`` with, or None."""
        with self._lock:
            if self._limit is not None:
                self._limited_until, retry_after = now + self._limit[0], self._limit[1]
                self._limit = None
                self._retry_after = retry_after
            if now < self._limited_until:
                return self._retry_after
            return None

    def next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def usage_for(self, reply: Reply) -> Usage:
        return reply.usage or self.usage

    def report(self, reported: Reported) -> None:
        with self._lock:
            self.reported.append(reported)

    # --- choosing the answer --------------------------------------------------------------

    def choose(self, turn: Turn) -> Reply:
        script: Sequence[Reply] = self.default
        start = 0
        for index in range(len(turn.messages) - 1, -1, -1):
            kind, text = turn.messages[index]
            if kind != "user":
                continue
            marker = next((m for m in self.scripts if m in text), None)
            if marker is not None:
                script, start = self.scripts[marker], index
                break
        counted = "assistant" if self.count_replies else "tool_result"
        done = sum(1 for kind, _ in turn.messages[start:] if kind == counted)
        reply = script[min(done, len(script) - 1)]
        offered = (
            reply.tool in turn.tools if reply.tool else any(n in turn.tools for n in SHELL_TOOLS)
        )
        if reply.calls_tool and not offered:
            return Reply(text="Fake title", delay=reply.delay, error=reply.error, usage=reply.usage)
        return reply


def _handler(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._record(None)
            path = urlsplit(self.path).path
            if path.endswith("/v1beta/models"):
                self._json(200, {"models": [_gemini_model(m) for m in server.models]})
            elif path.endswith("/models"):
                data = [_listed_model(m) for m in server.models]
                first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                listing = {"object": "list", "data": data, "has_more": False}
                self._json(200, {**listing, "first_id": first, "last_id": last})
            elif path.endswith("/api/tags"):
                self._json(200, {"models": [_ollama_model(m) for m in server.models]})
            else:
                self._json(404, {"error": {"message": f"no route {path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"_raw": raw.decode(errors="replace")}
            self._record(body)
            parts = urlsplit(self.path)
            path, query = parts.path, parts.query
            if path.endswith("/count_tokens"):
                self._json(200, {"input_tokens": INPUT_TOKENS})
                return
            if path.endswith(":countTokens"):
                self._json(200, {"totalTokens": INPUT_TOKENS})
                return
            protocol = protocol_of(path)
            if protocol is None:
                self._json(404, {"error": {"message": f"no route {path}"}})
                return
            server._asked.set()
            logged = Logged(path, time.time(), tag=self.headers.get("x-test-tag"))
            with server._lock:
                server.log.append(logged)
            retry_after = server._limited(logged.arrived)
            if retry_after is not None:
                self._error(protocol, 429, retry_after)
                logged.answered, logged.status = time.time(), 429
                return
            if server.reject_response_format and "response_format" in body:
                message = "response_format is not supported by this model"
                error = {"message": message, "type": "invalid_request_error"}
                self._json(400, {"error": {**error, "param": "response_format"}})
                logged.answered, logged.status = time.time(), 400
                return
            if server.reject_tools and body.get("tools"):
                message = f"{body.get('model')} does not support tools"
                self._json(400, {"error": {"message": message, "type": "invalid_request_error"}})
                logged.answered, logged.status = time.time(), 400
                return
            turn = parse(protocol, body, path, query)
            reply = server.choose(turn)
            forced = re.match(r"^/err(\d{3})/", path)
            if path.startswith("/slow/"):
                server.sleep(server.slow_seconds)
            if reply.delay:
                server.sleep(reply.delay)
            status = int(forced.group(1)) if forced else reply.error
            if status is not None:
                self._error(protocol, status)
                logged.answered, logged.status = time.time(), status
                return
            logged.status = 200
            ANSWER[protocol](self, server, turn, reply)
            logged.answered = time.time()

        def _record(self, body: Any) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with server._lock:
                server.requests.append(Recorded(self.command, self.path, headers, body))

        # --- writing ----------------------------------------------------------------------

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, protocol: str, status: int, retry_after: str = "0") -> None:
            message = f"fake error {status}"
            kind = "invalid_request_error" if status < 500 else "api_error"
            payload: dict[str, Any]
            if protocol == "anthropic":
                payload = {"type": "error", "error": {"type": kind, "message": message}}
            elif protocol.startswith("ollama"):
                payload = {"error": message}
            elif protocol == "gemini":
                state = "INVALID_ARGUMENT" if status < 500 else "INTERNAL"
                payload = {"error": {"code": status, "message": message, "status": state}}
            else:
                payload = {"error": {"message": message, "type": kind, "code": str(status)}}
            # Clients that retry honour these, so a test of a failing model stays fast.
            waits = {"retry-after": retry_after}
            if retry_after == "0":
                waits["retry-after-ms"] = "10"
            self._json(status, payload, waits)

        def ndjson(self, lines: Iterable[Any]) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/x-ndjson")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for line in lines:
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def sse(self, events: Iterator[tuple[str | None, Any]]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for name, data in events:
                    chunk = "" if name is None else f"event: {name}\n"
                    text = data if isinstance(data, str) else json.dumps(data)
                    chunk += f"data: {text}\n\n"
                    self.wfile.write(chunk.encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


# --- model discovery ----------------------------------------------------------------------

_CREATED = 1_750_000_000


def _listed_model(name: str) -> dict[str, Any]:
    """One entry of ``GET /v1/models``: the fields of OpenAI's list and of Anthropic's."""
    return {
        "id": name,
        "object": "model",
        "created": _CREATED,
        "owned_by": "fake",
        "type": "model",
        "display_name": name,
        "created_at": "2025-06-15T00:00:00Z",
    }


def _gemini_model(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
    }


def _ollama_model(name: str) -> dict[str, Any]:
    tagged = name if ":" in name else f"{name}:latest"
    return {
        "name": tagged,
        "model": tagged,
        "modified_at": "2025-06-15T00:00:00Z",
        "size": 2_019_393_189,
        "digest": "f" * 64,
        "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B"},
    }
