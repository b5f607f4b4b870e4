"""A scripted model server on 127.0.0.1 that speaks the wire protocols the agent CLIs use.

Protocols: Anthropic Messages (``/v1/messages``, SSE or JSON), OpenAI Chat Completions
(``/v1/chat/completions``, SSE with a usage chunk and ``[DONE]``, or JSON), OpenAI Responses
(``/v1/responses``, SSE) and Gemini (``…:streamGenerateContent?alt=sse`` and
``…:generateContent``).

The server is stateless across requests: each answer is chosen from the request itself.

- A **script** is a list of ``Reply`` turns. The turn to play is the number of tool results the
  request holds after the user message that selected the script (research §11: "a request with
  no tool result yet gets the tool call, otherwise the final text").
- ``scripts`` maps a marker to a script: the latest user message containing a marker selects it
  (a follow-up prompt after a resume starts its own script); otherwise ``default`` plays.
- A ``Reply`` with ``command`` calls the CLI's own shell tool (chosen by name among the tools
  the request offers: ``Bash``, ``bash``, ``exec_command``, ``run_shell_command``, ``shell``).
  A request that does not offer that tool (titles, commit messages, side queries) gets the
  reply's text, or ``"Fake title"`` when the reply needs the tool.
- Errors on demand: ``Reply(error=400)``, or any path under ``/err400/``, ``/err500/``.
  Slowness: ``Reply(delay=…)`` or a path under ``/slow/`` (waits ``slow_seconds``).
- Every request is recorded (``requests``); model requests also in ``log`` with the times they
  arrived and were answered, and the status.
- Rate limits on demand: ``limit_for(seconds, retry_after)`` answers every model request with
  429 and ``Retry-After`` from the first one after it for ``seconds``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SHELL_TOOLS = ("Bash", "bash", "exec_command", "run_shell_command", "shell", "developer__shell")
INPUT_TOKENS = 120
OUTPUT_TOKENS = 15


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


@dataclass(slots=True)
class _Turn:
    """What the request asks for, protocol-neutral."""

    tools: dict[str, dict[str, Any]]  # name -> JSON schema of its parameters
    messages: list[tuple[str, str]]  # (kind, text): kind is "user", "tool_result" or "other"
    model: str
    stream: bool


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (a cancelled agent) is no error of the server's


@dataclass
class FakeModelServer:
    default: Sequence[Reply] = DEFAULT_SCRIPT
    scripts: dict[str, Sequence[Reply]] = field(default_factory=dict)
    slow_seconds: float = 60.0
    requests: list[Recorded] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)

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
            if r.method == "POST" and _protocol(urlsplit(r.path).path) is not None
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

    # --- choosing the answer --------------------------------------------------------------

    def choose(self, turn: _Turn) -> Reply:
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
        done = sum(1 for kind, _ in turn.messages[start:] if kind == "tool_result")
        reply = script[min(done, len(script) - 1)]
        offered = (
            reply.tool in turn.tools if reply.tool else any(n in turn.tools for n in SHELL_TOOLS)
        )
        if reply.calls_tool and not offered:
            return Reply(text="Fake title", delay=reply.delay, error=reply.error)
        return reply


def _protocol(path: str) -> str | None:
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "responses"
    if path.endswith(":streamGenerateContent") or path.endswith(":generateContent"):
        return "gemini"
    return None


def _handler(server: FakeModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._record(None)
            path = urlsplit(self.path).path
            if path.endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": "fake-model"}]})
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
            protocol = _protocol(path)
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
            turn = _parse(protocol, body, path, query)
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
            _ANSWER[protocol](self, server, turn, reply)
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


# --- reading requests -------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(part) for part in content)
    if isinstance(content, dict):
        for key in ("text", "content"):
            if isinstance(content.get(key), str | list):
                return _text_of(content[key])
    return ""


def _parse(protocol: str, body: dict[str, Any], path: str, query: str) -> _Turn:
    messages: list[tuple[str, str]] = []
    tools: dict[str, dict[str, Any]] = {}
    model = str(body.get("model") or "fake-model")
    stream = bool(body.get("stream"))
    if protocol == "anthropic":
        for tool in body.get("tools") or []:
            if "name" in tool:
                tools[tool["name"]] = tool.get("input_schema") or {}
        for msg in body.get("messages") or []:
            content = msg.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for block in blocks:
                if block.get("type") == "tool_result":
                    messages.append(("tool_result", _text_of(block.get("content"))))
                elif msg.get("role") == "user" and block.get("type") == "text":
                    messages.append(("user", str(block.get("text") or "")))
                else:
                    messages.append(("other", ""))
    elif protocol == "chat":
        for tool in body.get("tools") or []:
            fn = tool.get("function") or {}
            if "name" in fn:
                tools[fn["name"]] = fn.get("parameters") or {}
        for msg in body.get("messages") or []:
            role = msg.get("role")
            kind = {"tool": "tool_result", "user": "user"}.get(role, "other")
            messages.append((kind, _text_of(msg.get("content"))))
    elif protocol == "responses":
        stream = bool(body.get("stream", True))
        for tool in body.get("tools") or []:
            if tool.get("type") == "function" and "name" in tool:
                tools[tool["name"]] = tool.get("parameters") or {}
        for item in body.get("input") or []:
            kind = str(item.get("type") or "message")
            if kind.endswith("_output"):
                messages.append(("tool_result", _text_of(item.get("output"))))
            elif kind == "message" and item.get("role") == "user":
                messages.append(("user", _text_of(item.get("content"))))
            else:
                messages.append(("other", ""))
    else:
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        stream = path.endswith(":streamGenerateContent")
        for tool in body.get("tools") or []:
            for decl in tool.get("functionDeclarations") or []:
                schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
                tools[decl["name"]] = schema
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                if "functionResponse" in part:
                    messages.append(("tool_result", json.dumps(part["functionResponse"])))
                elif content.get("role") == "user" and "text" in part:
                    messages.append(("user", str(part["text"])))
                else:
                    messages.append(("other", ""))
    return _Turn(tools=tools, messages=messages, model=model, stream=stream)


def _tool_call(turn: _Turn, reply: Reply) -> tuple[str, dict[str, Any]]:
    """The tool name and arguments of a reply that calls a tool."""
    if reply.tool is not None:
        return reply.tool, dict(reply.args or {})
    name = next((n for n in SHELL_TOOLS if n in turn.tools), None)
    if name is None:
        raise LookupError(f"no shell tool among {sorted(turn.tools)}")
    schema = turn.tools[name]
    props = schema.get("properties") or {}
    key = next((k for k in ("command", "cmd") if k in props), "command")
    args: dict[str, Any] = {key: reply.command}
    for required in schema.get("required") or []:
        if required not in args and (props.get(required) or {}).get("type") == "string":
            args[required] = "run the command"
    return name, args


# --- writing answers, one function per protocol -------------------------------------------


def _answer_anthropic(h: Any, server: FakeModelServer, turn: _Turn, reply: Reply) -> None:
    n = server.next_id()
    blocks: list[dict[str, Any]] = []
    if reply.thinking:
        blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": "fake-sig"})
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    if reply.calls_tool:
        name, args = _tool_call(turn, reply)
        blocks.append({"type": "tool_use", "id": f"toolu_{n:04d}", "name": name, "input": args})
    stop = "tool_use" if reply.calls_tool else "end_turn"
    usage = {
        "input_tokens": INPUT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": f"msg_{n:04d}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not turn.stream:
        h._json(200, message)
        return

    def events() -> Iterator[tuple[str | None, Any]]:
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        yield "message_start", {"type": "message_start", "message": start}
        for index, block in enumerate(blocks):
            kind = block["type"]
            if kind == "text":
                first, delta = (
                    {"type": "text", "text": ""},
                    {"type": "text_delta", "text": block["text"]},
                )
            elif kind == "thinking":
                first = {"type": "thinking", "thinking": "", "signature": ""}
                delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            else:
                first = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            if kind == "thinking":
                sig = {"type": "signature_delta", "signature": "fake-sig"}
                yield (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": sig},
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": OUTPUT_TOKENS},
            },
        )
        yield "message_stop", {"type": "message_stop"}

    h.sse(events())


def _answer_chat(h: Any, server: FakeModelServer, turn: _Turn, reply: Reply) -> None:
    n = server.next_id()
    created = int(time.time())
    calls = []
    if reply.calls_tool:
        name, args = _tool_call(turn, reply)
        fn = {"name": name, "arguments": json.dumps(args)}
        calls.append({"id": f"call_{n:04d}", "type": "function", "function": fn})
    finish = "tool_calls" if calls else "stop"
    usage = {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    base = {"id": f"chatcmpl-{n:04d}", "created": created, "model": turn.model}
    if not turn.stream:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": finish}
        h._json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        return

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**base, "object": "chat.completion.chunk", "choices": [choice]}

    def events() -> Iterator[tuple[str | None, Any]]:
        yield None, chunk({"role": "assistant", "content": ""})
        if reply.thinking:
            yield None, chunk({"reasoning_content": reply.thinking})
        if reply.text:
            yield None, chunk({"content": reply.text})
        for index, call in enumerate(calls):
            yield None, chunk({"tool_calls": [{"index": index, **call}]})
        yield None, chunk({}, finish)
        yield None, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        yield None, "[DONE]"

    h.sse(events())


def _answer_responses(h: Any, server: FakeModelServer, turn: _Turn, reply: Reply) -> None:
    n = server.next_id()
    rid = f"resp_{n:04d}"
    output: list[dict[str, Any]] = []
    if reply.text:
        part = {"type": "output_text", "text": reply.text, "annotations": []}
        output.append(
            {
                "id": f"msg_{n:04d}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
        )
    if reply.calls_tool:
        name, args = _tool_call(turn, reply)
        output.append(
            {
                "id": f"fc_{n:04d}",
                "type": "function_call",
                "status": "completed",
                "call_id": f"call_{n:04d}",
                "name": name,
                "arguments": json.dumps(args),
            }
        )
    usage = {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    response = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "model": turn.model,
        "status": "in_progress",
        "output": [],
    }
    seq = iter(range(1_000_000))

    def ev(kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, "sequence_number": next(seq), **data}

    def events() -> Iterator[tuple[str | None, Any]]:
        yield ev("response.created", response=response)
        yield ev("response.in_progress", response=response)
        for index, item in enumerate(output):
            if item["type"] == "message":
                yield ev(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                part = item["content"][0]
                where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                yield ev("response.content_part.added", **where, part={**part, "text": ""})
                yield ev("response.output_text.delta", **where, delta=part["text"])
                yield ev("response.output_text.done", **where, text=part["text"])
                yield ev("response.content_part.done", **where, part=part)
            else:
                yield ev(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
                where = {"item_id": item["id"], "output_index": index}
                yield ev("response.function_call_arguments.delta", **where, delta=item["arguments"])
                yield ev(
                    "response.function_call_arguments.done", **where, arguments=item["arguments"]
                )
            yield ev("response.output_item.done", output_index=index, item=item)
        done = {**response, "status": "completed", "output": output, "usage": usage}
        yield ev("response.completed", response=done)

    h.sse(events())


def _answer_gemini(h: Any, server: FakeModelServer, turn: _Turn, reply: Reply) -> None:
    n = server.next_id()
    usage = {
        "promptTokenCount": INPUT_TOKENS,
        "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    parts: list[dict[str, Any]] = []
    if reply.thinking:
        parts.append({"text": reply.thinking, "thought": True})
    if reply.text:
        parts.append({"text": reply.text})
    if reply.calls_tool:
        name, args = _tool_call(turn, reply)
        parts.append({"functionCall": {"name": name, "args": args}})

    def candidate(these: list[dict[str, Any]], final: bool) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": these}, "index": 0}
        out: dict[str, Any] = {
            "candidates": [cand],
            "modelVersion": turn.model,
            "responseId": f"r{n}",
        }
        if final:
            cand["finishReason"] = "STOP"
            out["usageMetadata"] = usage
        return out

    if not turn.stream:
        h._json(200, candidate(parts, True))
        return

    def events() -> Iterator[tuple[str | None, Any]]:
        for part in parts[:-1]:
            yield None, candidate([part], False)
        yield None, candidate(parts[-1:], True)

    h.sse(events())


_ANSWER = {
    "anthropic": _answer_anthropic,
    "chat": _answer_chat,
    "responses": _answer_responses,
    "gemini": _answer_gemini,
}
