"""The gateway's meter reads, from the fake model server's real HTTP answers, exactly the usage
the server says it reported: every protocol, streamed or not, cache tokens, costly answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from telecoder.gateway.meter import Metered, meter_for, prepare
from telecoder.gateway.prices import Prices
from tests.fakes.model_server import FakeModelServer, Reply, Reported, Usage

COSTLY = Usage(input=2_000_000, output=4000, cache_read=300_000, cache_write=50_000)
USER = [{"role": "user", "content": "hello"}]


def request(api: str, model: str, streamed: bool) -> tuple[str, dict[str, Any]]:
    """The path and body of one model request in ``api``."""
    if api == "anthropic":
        return "/v1/messages", {"model": model, "stream": streamed, "messages": USER}
    if api == "openai-chat":
        return "/v1/chat/completions", {"model": model, "stream": streamed, "messages": USER}
    if api == "openai-responses":
        return "/v1/responses", {"model": model, "stream": streamed, "input": "hello"}
    if api == "gemini":
        verb = "streamGenerateContent?alt=sse" if streamed else "generateContent"
        contents = [{"role": "user", "parts": [{"text": "hello"}]}]
        return f"/v1beta/models/{model}:{verb}", {"contents": contents}
    if api == "ollama-generate":
        return "/api/generate", {"model": model, "stream": streamed, "prompt": "hello"}
    return "/api/chat", {"model": model, "stream": streamed, "messages": USER}


def meter_answer(server: FakeModelServer, api: str, model: str, streamed: bool) -> Metered | None:
    path, body = request(api, model, streamed)
    kind = "ollama" if api.startswith("ollama") else api
    meter = meter_for(kind, streamed=streamed, request_model=model)
    with httpx.stream("POST", server.url + path, json=prepare(kind, body)) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_raw(7):  # small pieces, cut anywhere
            meter.feed(chunk)
    return meter.result()


def as_metered(reported: Reported) -> Metered:
    return Metered(
        reported.model, reported.input, reported.output, reported.cache_read, reported.cache_write
    )


APIS = ["anthropic", "openai-chat", "openai-responses", "gemini", "ollama-chat", "ollama-generate"]


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "json"])
@pytest.mark.parametrize("api", APIS)
def test_the_meter_reads_what_the_server_reported(api: str, streamed: bool) -> None:
    with FakeModelServer(usage=Usage(input=900, output=70, cache_read=5000, cache_write=300)) as s:
        got = meter_answer(s, api, "claude-sonnet-4-5", streamed)
        [reported] = s.reported
    assert reported.streamed is streamed
    assert reported.protocol == ("ollama" if api.startswith("ollama") else api)
    assert got == as_metered(reported)
    if api == "anthropic":
        assert got == Metered("claude-sonnet-4-5", 900, 70, 5000, 300)
    elif api.startswith("ollama"):  # no cache counts: all of it is input
        assert got == Metered("claude-sonnet-4-5", 6200, 70, 0, 0)
    else:  # no cache writes: billed as input
        assert got == Metered("claude-sonnet-4-5", 1200, 70, 5000, 0)


def test_costly_answers_per_server_and_per_reply() -> None:
    cheap = Usage(input=10, output=2)
    script = [Reply(text="one", usage=cheap), Reply(text="two")]
    with FakeModelServer(default=script, usage=COSTLY) as server:
        first = meter_answer(server, "anthropic", "claude-sonnet-4-5", True)
        path, body = request("anthropic", "claude-sonnet-4-5", False)
        body["messages"] = [*USER, {"role": "user", "content": [{"type": "tool_result"}]}]
        httpx.post(server.url + path, json=body).raise_for_status()
        reported = list(server.reported)
    assert first == Metered("claude-sonnet-4-5", 10, 2, 0, 0)
    assert [as_metered(r) for r in reported] == [
        Metered("claude-sonnet-4-5", 10, 2, 0, 0),
        Metered("claude-sonnet-4-5", 2_000_000, 4000, 300_000, 50_000),
    ]
    cost = Prices().cost("claude-sonnet-4-5", as_metered(reported[1]))
    assert cost is not None
    assert cost > 12  # past 200k input tokens: the long-context price
