"""The gateway's meter: each API's usage, streamed or not, whatever the chunk boundaries."""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from telecoder.gateway.meter import Metered, meter_for, prepare

# Model output that looks like usage: escaped inside a JSON string, it must not count.
DECOY = 'I read "usage": {"input_tokens": 999999, "output_tokens": 999999} and "model": "x" — é ✓'


def sse(events: Iterable[tuple[str | None, Any]]) -> bytes:
    out = ""
    for name, data in events:
        if name is not None:
            out += f"event: {name}\n"
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        out += f"data: {text}\n\n"
    return out.encode()


def ndjson(objects: Iterable[Any]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def pretty(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False).encode()


# --- one body per API, streamed and not ---------------------------------------------------

ANTHROPIC_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 2000,
    "output_tokens": 1,
}
ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": DECOY},
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "Bash",
            "input": {"command": "top", "usage": "high", "model": "their-model"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {**ANTHROPIC_USAGE, "output_tokens": 42},
}
ANTHROPIC_SSE = sse(
    [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**ANTHROPIC_MESSAGE, "content": [], "usage": ANTHROPIC_USAGE},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": DECOY}},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "delta": {"type": "input_json_delta", "partial_json": '{"usage": {"input_'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 20},
            },
        ),
        (
            "message_delta",
            {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 42}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
)
ANTHROPIC_WANT = Metered("claude-sonnet-4-5-20250929", 25, 42, 2000, 100)

CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 80,
    "total_tokens": 1280,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 64},
}


def chat_chunk(delta: dict[str, Any], **more: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    base = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06"}
    return {**base, "choices": [choice], "usage": None, **more}


CHAT_SSE = sse(
    [
        (None, chat_chunk({"role": "assistant", "content": ""})),
        (None, chat_chunk({"content": DECOY})),
        (None, chat_chunk({}, system_fingerprint="fp")),
        (None, {**chat_chunk({}), "choices": [], "usage": CHAT_USAGE}),
        (None, "[DONE]"),
    ]
)
CHAT_JSON = pretty(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": DECOY}}],
        "usage": CHAT_USAGE,
    }
)
CHAT_WANT = Metered("gpt-4o-2024-08-06", 176, 80, 1024, 0)

RESPONSES_USAGE = {
    "input_tokens": 5000,
    "input_tokens_details": {"cached_tokens": 4096},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 200},
    "total_tokens": 5300,
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "model": "gpt-5-codex",
    "status": "in_progress",
    "output": [],
    "tools": [{"type": "function", "name": "f", "parameters": {"properties": {"usage": {}}}}],
    "usage": None,
}
RESPONSES_SSE = sse(
    [
        ("response.created", {"type": "response.created", "response": RESPONSE}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": DECOY}),
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    **RESPONSE,
                    "status": "completed",
                    "output": [{"type": "message", "content": [{"text": DECOY * 2000}]}],
                    "usage": RESPONSES_USAGE,
                },
            },
        ),
    ]
)
RESPONSES_JSON = pretty({**RESPONSE, "status": "completed", "usage": RESPONSES_USAGE})
RESPONSES_WANT = Metered("gpt-5-codex", 904, 300, 4096, 0)


def gemini_chunk(text: str, usage: dict[str, Any]) -> dict[str, Any]:
    content = {"role": "model", "parts": [{"text": text}]}
    return {
        "candidates": [{"content": content, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-pro",
        "responseId": "r1",
    }


GEMINI_FINAL = {
    "promptTokenCount": 3000,
    "candidatesTokenCount": 50,
    "thoughtsTokenCount": 400,
    "cachedContentTokenCount": 2048,
    "totalTokenCount": 3450,
}
GEMINI_CHUNKS = [
    gemini_chunk(DECOY, {"promptTokenCount": 3000, "totalTokenCount": 3000}),
    gemini_chunk("more", {"promptTokenCount": 3000, "candidatesTokenCount": 9}),
    gemini_chunk("", GEMINI_FINAL),
]
GEMINI_SSE = sse((None, c) for c in GEMINI_CHUNKS)
GEMINI_ARRAY = b"[" + b",\r\n".join(pretty(c) for c in GEMINI_CHUNKS) + b"]"
GEMINI_JSON = pretty(GEMINI_CHUNKS[-1])
GEMINI_WANT = Metered("gemini-2.5-pro", 952, 450, 2048, 0)

OLLAMA_DONE = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 4883583458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}
OLLAMA_NDJSON = ndjson(
    [
        {"model": "llama3.2", "message": {"role": "assistant", "content": DECOY}, "done": False},
        {
            "model": "llama3.2",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"eval_count": 5}}}],
            },
            "done": False,
        },
        {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, **OLLAMA_DONE},
    ]
)
OLLAMA_GENERATE_JSON = pretty(
    {"model": "llama3.2", "response": DECOY, "context": [1, 2], **OLLAMA_DONE}
)
OLLAMA_WANT = Metered("llama3.2", 26, 282, 0, 0)

CASES = {
    "anthropic-sse": ("anthropic", True, ANTHROPIC_SSE, ANTHROPIC_WANT),
    "anthropic-json": ("anthropic", False, pretty(ANTHROPIC_MESSAGE), ANTHROPIC_WANT),
    "chat-sse": ("openai-chat", True, CHAT_SSE, CHAT_WANT),
    "chat-json": ("openai-chat", False, CHAT_JSON, CHAT_WANT),
    "responses-sse": ("openai-responses", True, RESPONSES_SSE, RESPONSES_WANT),
    "responses-json": ("openai-responses", False, RESPONSES_JSON, RESPONSES_WANT),
    "gemini-sse": ("gemini", True, GEMINI_SSE, GEMINI_WANT),
    "gemini-array": ("gemini", True, GEMINI_ARRAY, GEMINI_WANT),
    "gemini-json": ("gemini", False, GEMINI_JSON, GEMINI_WANT),
    "ollama-ndjson": ("ollama", True, OLLAMA_NDJSON, OLLAMA_WANT),
    "ollama-json": ("ollama", False, OLLAMA_GENERATE_JSON, OLLAMA_WANT),
}


def whole(body: bytes) -> Iterator[bytes]:
    yield body


def bytewise(body: bytes) -> Iterator[bytes]:
    return (body[i : i + 1] for i in range(len(body)))


def random_sizes(body: bytes) -> Iterator[bytes]:
    rng = random.Random(len(body))
    at = 0
    while at < len(body):
        size = rng.choice([1, 2, 3, 7, 64, 1000, 5000])
        yield body[at : at + size]
        at += size


def by_lines(body: bytes) -> Iterator[bytes]:
    return iter(body.splitlines(keepends=True))


CHUNKINGS: dict[str, Callable[[bytes], Iterable[bytes]]] = {
    "whole": whole,
    "bytewise": bytewise,
    "random": random_sizes,
    "lines": by_lines,
}


def metered(api: str, streamed: bool, chunks: Iterable[bytes], model: str | None = None):
    meter = meter_for(api, streamed=streamed, request_model=model)
    for chunk in chunks:
        meter.feed(chunk)
    return meter.result()


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_api_streamed_or_not_in_any_chunks(case: str, chunking: str) -> None:
    api, streamed, body, want = CASES[case]
    if chunking == "bytewise" and len(body) > 50_000:
        body = body.replace(DECOY.encode() * 2000, DECOY.encode() * 20)  # keep the test quick
    assert metered(api, streamed, CHUNKINGS[chunking](body), model="asked") == want


def test_anthropic_counts_only_grow() -> None:
    # message_delta's usage is cumulative; some servers send zeros for what they do not repeat
    delta = {"input_tokens": 0, "cache_read_input_tokens": None, "output_tokens": 42}
    zeros = json.dumps({"usage": delta}).encode()[1:-1]
    body = ANTHROPIC_SSE.replace(b'"usage": {"output_tokens": 42}', zeros)
    assert b'"input_tokens": 0' in body
    assert metered("anthropic", True, bytewise(body)) == ANTHROPIC_WANT


def test_the_requests_model_when_the_response_names_none() -> None:
    body = sse([(None, {"usageMetadata": GEMINI_FINAL})])
    got = metered("gemini", True, [body], model="gemini-2.5-flash")
    assert got == Metered("gemini-2.5-flash", 952, 450, 2048, 0)


def test_a_stream_without_usage_gives_none() -> None:
    no_usage = CHAT_SSE.replace(b'"usage": {', b'"other": {')
    assert metered("openai-chat", True, bytewise(no_usage)) is None
    assert metered("anthropic", True, [b"event: ping\ndata: {}\n\n"]) is None
    assert metered("ollama", True, [b""]) is None


@pytest.mark.parametrize(
    "body",
    [
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":12',  # cut short
        b'data: {"usage": {oops}}\n\n',
        b'data: {"usage": [1, 2]}\n\n',
        b'data: {"usage": {"input_tokens": "12"}}\n\n',
        b"<html><body>502 Bad Gateway</body></html>",
        bytes(range(256)) * 40,
        b'"usage"' * 5000 + b'"usage": {"input_tokens": ',
    ],
)
def test_a_malformed_body_gives_none(body: bytes) -> None:
    for chunks in (whole(body), bytewise(body), random_sizes(body)):
        assert metered("anthropic", True, chunks) is None


def test_a_number_cut_by_a_chunk_is_read_whole() -> None:
    body = OLLAMA_NDJSON
    at = body.rindex(b'"eval_count": ') + len(b'"eval_count": ') + 1  # "2|82"
    assert metered("ollama", True, [body[:at], body[at:]]) == OLLAMA_WANT


def test_a_value_longer_than_the_limit_is_skipped_not_kept() -> None:
    huge = {"model": "m" * 100_000, "usage": {"input_tokens": 3, "output_tokens": 4}}
    got = metered("anthropic", False, random_sizes(json.dumps(huge).encode()), model="asked")
    assert got == Metered("asked", 3, 4, 0, 0)


def test_memory_stays_bounded_on_a_large_stream() -> None:
    delta = chat_chunk({"content": "x" * 200})
    chunk = sse([(None, delta)] * 300)  # ~100 KB
    chunks = [chunk] * 80  # ~8 MB in all
    final = sse([(None, {**chat_chunk({}), "choices": [], "usage": CHAT_USAGE})])
    meter = meter_for("openai-chat", streamed=True, request_model=None)
    tracemalloc.start()
    try:
        for piece in chunks:
            meter.feed(piece)
        meter.feed(final)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert meter.result() == CHAT_WANT
    assert peak < 3 * len(chunk)  # a chunk or so at a time, never the body


def test_an_api_not_metered_gives_none() -> None:
    assert metered("other", True, [CHAT_SSE]) is None


def test_feed_never_raises() -> None:
    meter = meter_for("anthropic", streamed=True, request_model=None)
    meter.feed(memoryview(ANTHROPIC_SSE))  # type: ignore[arg-type]
    meter.feed(bytearray(b"\xff\xfe"))  # type: ignore[arg-type]
    meter.feed(None)  # type: ignore[arg-type]
    assert meter.result() == ANTHROPIC_WANT


def test_prepare_asks_a_streamed_chat_request_for_its_usage() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"x": 1}, "messages": []}
    prepared = prepare("openai-chat", body)
    assert prepared["stream_options"] == {"x": 1, "include_usage": True}
    assert body["stream_options"] == {"x": 1}  # the caller's body is left alone
    plain = {"model": "m", "stream": True}
    assert prepare("openai-chat", plain)["stream_options"] == {"include_usage": True}
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert prepare("openai-chat", asked) is asked
    assert prepare("openai-chat", {"stream": False}) == {"stream": False}
    assert prepare("anthropic", {"stream": True}) == {"stream": True}
    assert prepare("openai-responses", {"stream": True}) == {"stream": True}


def test_a_value_that_never_ends_is_not_read_again_at_every_byte() -> None:
    body = b'data: {"usage": {"input_tokens": 5, "note": "' + b"x" * 150_000 + b'"}}\n\n'
    started = time.perf_counter()
    assert metered("anthropic", True, bytewise(body)) is None  # too long to be usage: skipped
    assert time.perf_counter() - started < 5  # read a few times as it grew, not 150,000 times


def test_a_body_ending_in_a_number_is_read_at_the_end() -> None:
    body = b'{"model": "llama3.2", "done": true, "prompt_eval_count": 7, "eval_count": 31'
    assert metered("ollama", False, bytewise(body)) == Metered("llama3.2", 7, 31, 0, 0)
