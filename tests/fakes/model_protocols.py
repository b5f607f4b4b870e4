"""The wire formats of the fake model server (``model_server``): reading a request into a
protocol-neutral ``Turn``, writing a ``Reply`` in each protocol, and the usage each answer reports.

Protocols (the gateway's API names): ``anthropic`` (Messages), ``openai-chat`` (Chat
Completions), ``openai-responses`` (Responses), ``gemini`` (generateContent and
streamGenerateContent), ``ollama`` (native ``/api/chat`` and ``/api/generate``: NDJSON, or JSON
when ``"stream": false``).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tests.fakes.model_server import Reply

# The CLIs' shell tools; ``run_command`` (TeleCoder's builtin agent) last: a CLI's own comes first.
SHELL_TOOLS = (
    *("Bash", "bash", "exec_command", "run_shell_command", "shell", "developer__shell"),
    "run_command",
)
INPUT_TOKENS = 120
OUTPUT_TOKENS = 15


@dataclass(frozen=True, slots=True)
class Usage:
    """What an answer reports using: ``input`` is the fresh input; cache reads and writes apart.

    A protocol without cache writes (all but Anthropic's) reports them as input, one without
    cached reads (Ollama) reports them as input too: ``Reported`` holds what went on the wire.
    """

    input: int = INPUT_TOKENS
    output: int = OUTPUT_TOKENS
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Reported:
    """The usage one answer reported, normalised: ``input`` is fresh input, as the gateway's
    ``usage`` rows count it."""

    protocol: str  # the API: anthropic, openai-chat, openai-responses, gemini, ollama
    model: str
    input: int
    output: int
    cache_read: int
    cache_write: int
    streamed: bool


@dataclass(slots=True)
class Turn:
    """What the request asks for, protocol-neutral."""

    tools: dict[str, dict[str, Any]]  # name -> JSON schema of its parameters
    # (kind, text): kind is "user", "tool_result", "assistant" (chat protocols) or "other"
    messages: list[tuple[str, str]]
    model: str
    stream: bool


class Answering(Protocol):
    """What the answer writers need of the server."""

    def next_id(self) -> int: ...

    def usage_for(self, reply: Reply) -> Usage: ...

    def report(self, reported: Reported) -> None: ...


def protocol_of(path: str) -> str | None:
    """The protocol a model request's path speaks (``ollama-chat``, ``ollama-generate`` for
    Ollama's two endpoints)."""
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/responses"):
        return "openai-responses"
    if path.endswith(":streamGenerateContent") or path.endswith(":generateContent"):
        return "gemini"
    if path.endswith("/api/chat"):
        return "ollama-chat"
    if path.endswith("/api/generate"):
        return "ollama-generate"
    return None


# --- reading requests -------------------------------------------------------------------------


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text_of(part) for part in content)
    if isinstance(content, dict):
        for key in ("text", "content"):
            if isinstance(content.get(key), str | list):
                return text_of(content[key])
    return ""


def parse(protocol: str, body: dict[str, Any], path: str, query: str) -> Turn:
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
                    messages.append(("tool_result", text_of(block.get("content"))))
                elif msg.get("role") == "user" and block.get("type") == "text":
                    messages.append(("user", str(block.get("text") or "")))
                else:
                    messages.append(("other", ""))
    elif protocol in ("openai-chat", "ollama-chat"):
        if protocol == "ollama-chat":
            stream = body.get("stream", True) is not False
        for tool in body.get("tools") or []:
            fn = tool.get("function") or {}
            if "name" in fn:
                tools[fn["name"]] = fn.get("parameters") or {}
        for msg in body.get("messages") or []:
            role = msg.get("role")
            kind = {"tool": "tool_result", "user": "user", "assistant": "assistant"}.get(
                role, "other"
            )
            messages.append((kind, text_of(msg.get("content"))))
    elif protocol == "ollama-generate":
        stream = body.get("stream", True) is not False
        messages.append(("user", str(body.get("prompt") or "")))
    elif protocol == "openai-responses":
        stream = bool(body.get("stream", True))
        for tool in body.get("tools") or []:
            if tool.get("type") == "function" and "name" in tool:
                tools[tool["name"]] = tool.get("parameters") or {}
        items = body.get("input") or []
        if isinstance(items, str):  # a bare prompt
            items = [{"type": "message", "role": "user", "content": items}]
        for item in items:
            kind = str(item.get("type") or "message")
            if kind.endswith("_output"):
                messages.append(("tool_result", text_of(item.get("output"))))
            elif kind == "message" and item.get("role") == "user":
                messages.append(("user", text_of(item.get("content"))))
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
    return Turn(tools=tools, messages=messages, model=model, stream=stream)


def tool_call(turn: Turn, reply: Reply) -> tuple[str, dict[str, Any]]:
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


def _answer_anthropic(h: Any, server: Answering, turn: Turn, reply: Reply) -> None:
    n = server.next_id()
    blocks: list[dict[str, Any]] = []
    if reply.thinking:
        blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": "fake-sig"})
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    if reply.calls_tool:
        name, args = tool_call(turn, reply)
        blocks.append({"type": "tool_use", "id": f"toolu_{n:04d}", "name": name, "input": args})
    stop = "tool_use" if reply.calls_tool else "end_turn"
    u = server.usage_for(reply)
    usage = {
        "input_tokens": u.input,
        "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
    }
    server.report(_reported("anthropic", turn, u))
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
            first: dict[str, Any]
            delta: dict[str, Any]
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
                "usage": {"output_tokens": u.output},
            },
        )
        yield "message_stop", {"type": "message_stop"}

    h.sse(events())


def _answer_chat(h: Any, server: Answering, turn: Turn, reply: Reply) -> None:
    n = server.next_id()
    created = int(time.time())
    calls = []
    if reply.calls_tool:
        name, args = tool_call(turn, reply)
        fn = {"name": name, "arguments": json.dumps(args)}
        calls.append({"id": f"call_{n:04d}", "type": "function", "function": fn})
    finish = "tool_calls" if calls else "stop"
    u = _no_cache_write(server.usage_for(reply))
    prompt = u.input + u.cache_read
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
    }
    server.report(_reported("openai-chat", turn, u))
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


def _answer_responses(h: Any, server: Answering, turn: Turn, reply: Reply) -> None:
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
        name, args = tool_call(turn, reply)
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
    u = _no_cache_write(server.usage_for(reply))
    prompt = u.input + u.cache_read
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + u.output,
    }
    server.report(_reported("openai-responses", turn, u))
    response = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "model": turn.model,
        "status": "in_progress",
        "output": [],
        "usage": None,
    }
    if not turn.stream:
        h._json(200, {**response, "status": "completed", "output": output, "usage": usage})
        return
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


def _answer_gemini(h: Any, server: Answering, turn: Turn, reply: Reply) -> None:
    n = server.next_id()
    u = _no_cache_write(server.usage_for(reply))
    prompt = u.input + u.cache_read
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": u.output,
        "totalTokenCount": prompt + u.output,
    }
    if u.cache_read:
        usage["cachedContentTokenCount"] = u.cache_read
    server.report(_reported("gemini", turn, u))
    parts: list[dict[str, Any]] = []
    if reply.thinking:
        parts.append({"text": reply.thinking, "thought": True})
    if reply.text:
        parts.append({"text": reply.text})
    if reply.calls_tool:
        name, args = tool_call(turn, reply)
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


def _answer_ollama(h: Any, server: Answering, turn: Turn, reply: Reply, *, chat: bool) -> None:
    u = server.usage_for(reply)
    u = Usage(input=u.input + u.cache_read + u.cache_write, output=u.output)
    server.report(_reported("ollama", turn, u))
    base = {"model": turn.model, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    counts = {
        "done": True,
        "done_reason": "stop",
        "total_duration": 1_000_000,
        "load_duration": 100_000,
        "prompt_eval_count": u.input,
        "prompt_eval_duration": 200_000,
        "eval_count": u.output,
        "eval_duration": 700_000,
    }
    calls = []
    if chat and reply.calls_tool:
        name, args = tool_call(turn, reply)
        calls.append({"function": {"name": name, "arguments": args}})

    def piece(text: str, *, thinking: bool = False, with_calls: bool = False, **more: Any) -> Any:
        if not chat:
            return {**base, "response": text, **more}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = reply.thinking
        if with_calls:
            message["tool_calls"] = calls
        return {**base, "message": message, **more}

    final: dict[str, Any] = {**counts} if chat else {**counts, "context": [1, 2, 3]}
    if not turn.stream:
        whole = piece(reply.text, thinking=bool(reply.thinking), with_calls=bool(calls), **final)
        h._json(200, whole)
        return
    lines: list[dict[str, Any]] = []
    if chat and reply.thinking:
        lines.append(piece("", thinking=True, done=False))
    lines += [piece(word, done=False) for word in re.findall(r"\S+\s*", reply.text)]
    if calls:
        lines.append(piece("", with_calls=True, done=False))
    lines.append(piece("", **final))
    h.ndjson(lines)


def _reported(protocol: str, turn: Turn, u: Usage) -> Reported:
    return Reported(
        protocol=protocol,
        model=turn.model,
        input=u.input,
        output=u.output,
        cache_read=u.cache_read,
        cache_write=u.cache_write,
        streamed=turn.stream,
    )


def _no_cache_write(u: Usage) -> Usage:
    """A protocol with no cache writes bills them as input."""
    return Usage(input=u.input + u.cache_write, output=u.output, cache_read=u.cache_read)


ANSWER: dict[str, Callable[[Any, Answering, Turn, Reply], None]] = {
    "anthropic": _answer_anthropic,
    "openai-chat": _answer_chat,
    "openai-responses": _answer_responses,
    "gemini": _answer_gemini,
    "ollama-chat": functools.partial(_answer_ollama, chat=True),
    "ollama-generate": functools.partial(_answer_ollama, chat=False),
}
