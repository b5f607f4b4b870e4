"""The gateway's pure parts: which API a path is, where a key travels, where requests go."""

from __future__ import annotations

import json

import pytest

from telecoder.gateway import Ticket, vendor_replaced
from telecoder.gateway.apis import (
    Call,
    Kind,
    error_body,
    parse,
    presented_key,
    request_model,
    without_key,
)
from telecoder.gateway.apis import streamed as is_streamed
from telecoder.gateway.proxy import VENDOR_VARS
from telecoder.gateway.tickets import Tickets
from telecoder.gateway.upstreams import Upstreams, from_environment


@pytest.mark.parametrize(
    ("method", "target", "kind", "rest", "api"),
    [
        ("POST", "/anthropic/v1/messages?beta=true", Kind.ANTHROPIC, "/v1/messages", "anthropic"),
        ("POST", "/anthropic/v1/messages/count_tokens", Kind.ANTHROPIC, None, None),
        ("GET", "/anthropic/v1/models", Kind.ANTHROPIC, "/v1/models", None),
        ("POST", "/openai/v1/chat/completions", Kind.OPENAI, "/chat/completions", "openai-chat"),
        ("POST", "/openai/v1/responses", Kind.OPENAI, "/responses", "openai-responses"),
        ("GET", "/openai/v1/models", Kind.OPENAI, "/models", None),
        ("POST", "/openai/v1/embeddings", Kind.OPENAI, "/embeddings", None),
        (
            "POST",
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            Kind.GEMINI,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "gemini",
        ),
        ("POST", "/gemini/v1beta/models/g:countTokens", Kind.GEMINI, None, None),
        ("POST", "/ollama/api/chat", Kind.OLLAMA, "/api/chat", "ollama"),
        ("POST", "/ollama/tc-abc/api/generate", Kind.OLLAMA, "/api/generate", "ollama"),
        ("GET", "/ollama/api/tags", Kind.OLLAMA, "/api/tags", None),
        ("POST", "/api/chat", Kind.OLLAMA, "/api/chat", "ollama"),
    ],
)
def test_a_path_names_its_kind_and_api(
    method: str, target: str, kind: Kind, rest: str | None, api: str | None
) -> None:
    call = parse(method, target)
    assert call is not None
    assert (call.kind, call.api) == (kind, api)
    if rest is not None:
        assert call.rest == rest


@pytest.mark.parametrize("target", ["/", "/v1/messages", "/anthropicx/v1/messages", "/openai/x"])
def test_other_paths_are_no_api_of_the_gateways(target: str) -> None:
    assert parse("POST", target) is None


def test_the_upstream_path_keeps_the_query_but_not_a_key() -> None:
    call = parse("POST", "/gemini/v1beta/models/g:generateContent?alt=sse&key=tc-x")
    assert call is not None
    assert presented_key(call, {}) == "tc-x"
    clean = Call(call.kind, call.rest, without_key(call.query), call.api)
    assert clean.upstream_path() == "/v1beta/models/g:generateContent?alt=sse"


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"x-api-key": "tc-a"}, "tc-a"),
        ({"authorization": "Bearer tc-b"}, "tc-b"),
        ({"authorization": "bearer  tc-c "}, "tc-c"),
        ({"x-goog-api-key": "tc-d"}, "tc-d"),
        ({"authorization": "Basic xyz"}, None),
        ({}, None),
    ],
)
def test_a_key_is_found_wherever_a_client_puts_it(headers: dict[str, str], key: str | None) -> None:
    call = parse("POST", "/openai/v1/chat/completions")
    assert call is not None
    assert presented_key(call, headers) == key


def test_an_ollama_key_in_the_path() -> None:
    call = parse("POST", "/ollama/tc-abc/api/chat")
    assert call is not None
    assert presented_key(call, {}) == "tc-abc"
    assert call.upstream_path() == "/api/chat"


def test_model_and_streaming_per_api() -> None:
    gemini = parse("POST", "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent")
    chat = parse("POST", "/openai/v1/chat/completions")
    ollama = parse("POST", "/ollama/api/chat")
    assert gemini is not None
    assert chat is not None
    assert ollama is not None
    assert request_model(gemini, None) == "gemini-2.5-pro"
    assert is_streamed(gemini, None)
    assert request_model(chat, {"model": "gpt-5"}) == "gpt-5"
    assert request_model(chat, {"model": 3}) is None
    assert not is_streamed(chat, {"model": "gpt-5"})
    assert is_streamed(chat, {"stream": True})
    assert is_streamed(ollama, {})  # Ollama streams unless told not to
    assert not is_streamed(ollama, {"stream": False})


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (Kind.ANTHROPIC, ("error", "message")),
        (Kind.OPENAI, ("error", "message")),
        (Kind.GEMINI, ("error", "message")),
        (Kind.OLLAMA, ("error",)),
    ],
)
def test_errors_come_in_the_shape_each_client_reads(kind: Kind, path: tuple[str, ...]) -> None:
    value = json.loads(error_body(kind, 401, "no such key"))
    for part in path:
        value = value[part]
    assert value == "no such key"


def test_upstreams_come_from_the_operators_environment() -> None:
    targets = from_environment(
        {
            "ANTHROPIC_AUTH_TOKEN": "tok",
            "OPENAI_BASE_URL": "http://proxy.internal/v1",
            "OPENAI_API_KEY": "sk",
            "GOOGLE_API_KEY": "g",
            "OLLAMA_HOST": "10.0.0.5:11434",
        }
    )
    assert targets[Kind.ANTHROPIC].base_url == "https://api.anthropic.com"
    assert targets[Kind.ANTHROPIC].auth == (("authorization", "Bearer tok"),)
    assert targets[Kind.OPENAI].base_url == "http://proxy.internal/v1"
    assert targets[Kind.OPENAI].auth == (("authorization", "Bearer sk"),)
    assert targets[Kind.GEMINI].auth == (("x-goog-api-key", "g"),)
    assert targets[Kind.OLLAMA].base_url == "http://10.0.0.5:11434"
    assert targets[Kind.OLLAMA].auth == ()
    assert "tok" not in repr(targets[Kind.ANTHROPIC])  # a key never shows in a repr
    call = parse("POST", "/openai/v1/chat/completions")
    assert call is not None
    route = Upstreams(targets).route(call, "gpt-5", Ticket(session_id="s", attempt=1))
    assert [t.url(call) for t in route] == ["http://proxy.internal/v1/chat/completions"]


def test_an_agent_gets_no_vendor_variable_of_the_operators() -> None:
    operator = {
        "PATH": "/usr/bin",
        "ANTHROPIC_API_KEY": "real",
        "ANTHROPIC_AUTH_TOKEN": "real",
        "GOOGLE_API_KEY": "real",
        "OPENAI_BASE_URL": "https://real",
    }
    gateway = {"OPENAI_BASE_URL": "http://127.0.0.1:1/openai/v1", "OPENAI_API_KEY": "tc-k"}
    assert vendor_replaced(operator, gateway) == {"PATH": "/usr/bin", **gateway}
    assert vendor_replaced(operator, {}) == {"PATH": "/usr/bin"}
    assert {"ANTHROPIC_AUTH_TOKEN", "GOOGLE_API_KEY", "OLLAMA_HOST"} <= VENDOR_VARS


def test_a_ticket_is_found_by_its_key_until_revoked() -> None:
    tickets = Tickets()
    ticket = tickets.add(Ticket(session_id="s", attempt=1))
    assert ticket.key.startswith("tc-")
    assert len(ticket.key) > 40
    assert tickets.get(ticket.key) is ticket
    assert tickets.get("tc-" + "x" * 43) is None
    assert tickets.get(None) is None
    assert ticket.key not in repr(ticket)
    tickets.remove(ticket)
    assert tickets.get(ticket.key) is None
    assert ticket.revoked
