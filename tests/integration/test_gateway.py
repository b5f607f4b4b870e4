"""The gateway on loopback between a client and real local HTTP servers: keys, forwarding,
streaming, errors, headers, usage rows."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from telecoder.domain import NewSession
from telecoder.gateway import Gateway, Ticket
from telecoder.gateway.upstreams import Upstreams
from telecoder.store import Store
from tests.fakes.model_server import INPUT_TOKENS, OUTPUT_TOKENS, FakeModelServer

REAL = {
    "ANTHROPIC_API_KEY": "sk-ant-REAL-0123456789",
    "OPENAI_API_KEY": "sk-REAL-openai-0123456789",
    "GEMINI_API_KEY": "REAL-gemini-0123456789",
}
ANTHROPIC_BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}


def upstream_env(url: str, **more: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": url,
        "OPENAI_BASE_URL": f"{url}/v1",
        "GOOGLE_GEMINI_BASE_URL": url,
        "OLLAMA_HOST": url,
        **REAL,
        **more,
    }


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture
async def gateway(model_server: FakeModelServer) -> AsyncIterator[Gateway]:
    gateway = Gateway(upstreams=Upstreams.from_environment(upstream_env(model_server.url)))
    yield gateway
    await gateway.close()


@pytest.fixture
async def ticket(gateway: Gateway) -> Ticket:
    events: list[tuple[str, dict[str, Any]]] = []
    ticket = Ticket(session_id="s1", attempt=1, on_event=lambda k, d: events.append((k, d)))
    ticket.events = events  # type: ignore[attr-defined]
    return await gateway.issue(ticket)


async def test_a_request_goes_upstream_with_the_real_key_and_comes_back_as_is(
    gateway: Gateway, ticket: Ticket, model_server: FakeModelServer
) -> None:
    env = gateway.env(ticket)
    assert not set(REAL.values()) & set(env.values())
    async with httpx.AsyncClient() as client:
        through = await client.post(
            f"{env['ANTHROPIC_BASE_URL']}/v1/messages",
            headers={"x-api-key": env["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"},
            json=ANTHROPIC_BODY,
        )
    assert through.status_code == 200, through.text
    assert through.json()["content"] == [{"type": "text", "text": "Fake title"}]
    seen = model_server.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == REAL["ANTHROPIC_API_KEY"]
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body == ANTHROPIC_BODY
    assert ticket.requests == 1
    assert ticket.models_answered == {"claude-sonnet-4-5"}
    assert [k for k, _ in ticket.events] == ["usage"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "headers", "kind"),
    [
        ("/anthropic/v1/messages", {"x-api-key": "tc-nope"}, "anthropic"),
        ("/openai/v1/chat/completions", {"authorization": "Bearer sk-REAL"}, "openai"),
        ("/gemini/v1beta/models/g:generateContent?key=tc-x", {}, "gemini"),
        ("/ollama/api/chat", {}, "ollama"),
    ],
)
async def test_an_unknown_key_is_refused_and_nothing_is_forwarded(
    gateway: Gateway,
    ticket: Ticket,
    model_server: FakeModelServer,
    path: str,
    headers: dict[str, str],
    kind: str,
) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(gateway.url + path, headers=headers, json=ANTHROPIC_BODY)
    assert answer.status_code == 401
    text = json.dumps(answer.json())
    assert "unknown or revoked TeleCoder gateway key" in text
    assert model_server.requests == []
    if kind == "anthropic":
        assert answer.json()["error"]["type"] == "authentication_error"


async def test_a_revoked_key_is_refused(gateway: Gateway, model_server: FakeModelServer) -> None:
    first = await gateway.issue(Ticket(session_id="a", attempt=1))
    other = await gateway.issue(Ticket(session_id="b", attempt=1))  # keeps the gateway up
    url = gateway.url
    await gateway.revoke(first)
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{url}/openai/v1/chat/completions",
            headers={"authorization": f"Bearer {first.key}"},
            json={"model": "m", "messages": []},
        )
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"
        still = await client.post(
            f"{url}/openai/v1/chat/completions",
            headers={"authorization": f"Bearer {other.key}"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
        assert still.status_code == 200
    assert len(model_server.requests) == 1
    assert model_server.requests[0].headers["authorization"] == f"Bearer {REAL['OPENAI_API_KEY']}"


async def test_the_gateway_stops_with_its_last_ticket_and_starts_again() -> None:
    gateway = Gateway(upstreams=Upstreams.from_environment({}))
    ticket = await gateway.issue(Ticket(session_id="a", attempt=1))
    url = gateway.url
    await gateway.revoke(ticket)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"{url}/openai/v1/models")
    again = await gateway.issue(Ticket(session_id="a", attempt=2))
    assert gateway.url.startswith("http://127.0.0.1:")
    await gateway.revoke(again)


async def test_gemini_key_in_the_query_is_replaced_by_the_real_key_in_a_header(
    gateway: Gateway, ticket: Ticket, model_server: FakeModelServer
) -> None:
    env = gateway.env(ticket)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = f"{env['GOOGLE_GEMINI_BASE_URL']}/v1beta/models/gemini-2.5-flash:generateContent"
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, params={"key": ticket.key, "alt": "json"}, json=body)
    assert answer.status_code == 200, answer.text
    seen = model_server.requests[-1]
    assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent?alt=json"
    assert seen.headers["x-goog-api-key"] == REAL["GEMINI_API_KEY"]
    assert ticket.models_answered == {"gemini-2.5-flash"}


async def test_unmetered_paths_are_forwarded_without_a_usage_row(
    gateway: Gateway, ticket: Ticket, model_server: FakeModelServer
) -> None:
    env = gateway.env(ticket)
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{env['OPENAI_BASE_URL']}/models", headers={"authorization": f"Bearer {ticket.key}"}
        )
    assert [model["id"] for model in answer.json()["data"]] == ["fake-model"]
    assert model_server.requests[-1].path == "/v1/models"
    assert ticket.requests == 0


async def test_upstream_errors_pass_through_with_status_and_body(
    model_server: FakeModelServer,
) -> None:
    env = upstream_env(model_server.url + "/err503")
    gateway = Gateway(upstreams=Upstreams.from_environment(env))
    ticket = await gateway.issue(Ticket(session_id="s", attempt=1))
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": ticket.key},
                json=ANTHROPIC_BODY,
            )
        assert answer.status_code == 503
        assert "fake error 503" in answer.text
        assert answer.headers["retry-after"] == "0"
        assert ticket.requests == 1
        assert ticket.models_answered == set()
    finally:
        await gateway.revoke(ticket)


async def test_an_unreachable_upstream_is_a_502_in_the_kinds_shape() -> None:
    env = upstream_env("http://127.0.0.1:9")  # discard: nothing listens
    gateway = Gateway(upstreams=Upstreams.from_environment(env))
    ticket = await gateway.issue(Ticket(session_id="s", attempt=1))
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": ticket.key},
                json=ANTHROPIC_BODY,
            )
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["type"] == "api_error"
        assert error["message"].startswith("the gateway could not reach its anthropic endpoint")
        assert REAL["ANTHROPIC_API_KEY"] not in answer.text
    finally:
        await gateway.revoke(ticket)


# --- a bare upstream, to see headers and chunk timing ------------------------------------------


class Upstream:
    """Streams two chunks with a pause the test ends; records the request headers."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.headers = {k.lower(): v for k, v in self.headers.items()}
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("keep-alive", "timeout=5")
                self.send_header("connection", "keep-alive, x-private")
                self.send_header("x-private", "hop")
                self.send_header("x-upstream", "yes")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self._chunk(b'event: one\ndata: {"n": 1}\n\n')
                outer.release.wait(10)
                self._chunk(b'event: two\ndata: {"n": 2}\n\n')
                self._chunk(b"")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
async def bare() -> AsyncIterator[tuple[Gateway, Ticket, Upstream]]:
    upstream = Upstream()
    gateway = Gateway(upstreams=Upstreams.from_environment(upstream_env(upstream.url)))
    ticket = await gateway.issue(Ticket(session_id="s", attempt=1))
    yield gateway, ticket, upstream
    await gateway.close()
    upstream.close()


async def test_a_stream_passes_chunk_by_chunk_before_the_upstream_finished(
    bare: tuple[Gateway, Ticket, Upstream],
) -> None:
    gateway, ticket, upstream = bare
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            f"{gateway.url}/anthropic/v1/messages",
            headers={"x-api-key": ticket.key},
            json={**ANTHROPIC_BODY, "stream": True},
        ) as response,
    ):
        chunks = response.aiter_raw()
        # The upstream holds its second chunk until the first has arrived through the gateway.
        first = await asyncio.wait_for(anext(chunks), 5)
        assert first == b'event: one\ndata: {"n": 1}\n\n'
        assert not upstream.release.is_set()
        upstream.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert rest == b'event: two\ndata: {"n": 2}\n\n'
    assert ticket.requests == 1


async def test_hop_by_hop_headers_stay_on_their_hop(
    bare: tuple[Gateway, Ticket, Upstream],
) -> None:
    gateway, ticket, upstream = bare
    upstream.release.set()
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gateway.url}/anthropic/v1/messages",
            headers={
                "x-api-key": ticket.key,
                "connection": "keep-alive, x-mine",
                "x-mine": "hop",
                "keep-alive": "timeout=9",
                "te": "trailers",
                "proxy-authorization": "Basic secret",
                "x-end-to-end": "kept",
                "accept-encoding": "gzip",
            },
            json=ANTHROPIC_BODY,
        )
    seen = upstream.headers
    for name in ("x-mine", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen, name
    assert seen["x-end-to-end"] == "kept"
    assert seen["accept-encoding"] == "identity"
    assert seen["x-api-key"] == REAL["ANTHROPIC_API_KEY"]
    assert "authorization" not in seen
    assert answer.headers["x-upstream"] == "yes"
    assert "x-private" not in answer.headers
    assert "keep-alive" not in answer.headers
    assert answer.text.count("event:") == 2


async def test_the_real_key_is_never_in_a_response_an_event_or_a_log(
    gateway: Gateway,
    ticket: Ticket,
    model_server: FakeModelServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = gateway.env(ticket)
    texts: list[str] = []
    async with httpx.AsyncClient() as client:
        for stream in (False, True):
            answer = await client.post(
                f"{env['ANTHROPIC_BASE_URL']}/v1/messages",
                headers={"authorization": f"Bearer {ticket.key}"},
                json={**ANTHROPIC_BODY, "stream": stream},
            )
            texts.append(answer.text + json.dumps(dict(answer.headers)))
        bad = await client.post(
            f"{env['ANTHROPIC_BASE_URL']}/v1/messages", headers={"x-api-key": "tc-bad"}, json={}
        )
        texts.append(bad.text)
    texts += [json.dumps(data) for _, data in ticket.events]  # type: ignore[attr-defined]
    texts += [record.getMessage() for record in caplog.records]
    for real in REAL.values():
        assert all(real not in text for text in texts)
    assert model_server.requests[-1].headers["x-api-key"] == REAL["ANTHROPIC_API_KEY"]


async def test_an_ollama_key_may_travel_in_the_path(
    gateway: Gateway, ticket: Ticket, model_server: FakeModelServer
) -> None:
    host = gateway.env(ticket)["OLLAMA_HOST"]
    assert host.endswith(f"/ollama/{ticket.key}")
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{host}/api/tags")
    assert answer.status_code == 200, answer.text  # forwarded to the fake's Ollama API
    assert [model["name"] for model in answer.json()["models"]] == ["fake-model:latest"]
    assert model_server.requests[-1].path == "/api/tags"


async def test_usage_rows_are_written_and_reach_the_sessions_totals(
    model_server: FakeModelServer, store: Store
) -> None:
    session = await store.sessions.create(NewSession(repo="r", prompt="p", engine="claude-code"))
    gateway = Gateway(
        upstreams=Upstreams.from_environment(upstream_env(model_server.url)), store=store
    )
    ticket = await gateway.issue(
        Ticket(session_id=session.id, attempt=1, repo="r", engine="claude-code", user="ann")
    )
    async with httpx.AsyncClient() as client:
        for stream in (False, True):
            answer = await client.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": ticket.key},
                json={**ANTHROPIC_BODY, "stream": stream},
            )
            assert answer.status_code == 200
    await gateway.revoke(ticket)  # waits for the rows
    rows = await store.usage.of_session(session.id)
    assert [(r.api, r.endpoint, r.status, r.streamed) for r in rows] == [
        ("anthropic", "anthropic", 200, False),
        ("anthropic", "anthropic", 200, True),
    ]
    assert all(r.model == "claude-sonnet-4-5" and r.user == "ann" for r in rows)
    assert all(r.ttft_ms is not None and r.latency_ms >= r.ttft_ms for r in rows)
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(INPUT_TOKENS, OUTPUT_TOKENS)] * 2
    assert all(r.cost_usd is not None and r.cost_usd > 0 for r in rows)
    after = await store.sessions.get(session.id)
    assert after.input_tokens == ticket.input_tokens == 2 * INPUT_TOKENS
    assert after.output_tokens == ticket.output_tokens == 2 * OUTPUT_TOKENS
    assert after.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in rows))
    assert ticket.spent_usd == pytest.approx(after.cost_usd)


async def test_ollama_answers_are_metered_and_priced_by_overrides_only(
    model_server: FakeModelServer, store: Store
) -> None:
    session = await store.sessions.create(NewSession(repo="r", prompt="p", engine="goose"))
    gateway = Gateway(
        upstreams=Upstreams.from_environment(upstream_env(model_server.url)), store=store
    )
    ticket = await gateway.issue(Ticket(session_id=session.id, attempt=1))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient() as client:
        for model, stream in (("deepseek-r1:8b", True), ("deepseek-r1:8b", False)):
            answer = await client.post(
                f"{gateway.url}/ollama/{ticket.key}/api/chat",
                json={**body, "model": model, "stream": stream},
            )
            assert answer.status_code == 200, answer.text
    await gateway.revoke(ticket)
    rows = await store.usage.of_session(session.id)
    assert [(r.api, r.model, r.streamed) for r in rows] == [
        ("ollama", "deepseek-r1:8b", True),
        ("ollama", "deepseek-r1:8b", False),
    ]
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(INPUT_TOKENS, OUTPUT_TOKENS)] * 2
    assert [r.cost_usd for r in rows] == [None, None]  # a local model: no list price to guess


async def test_a_streamed_chat_request_is_asked_for_its_usage(
    gateway: Gateway, ticket: Ticket, model_server: FakeModelServer
) -> None:
    body = {"model": "gpt-4.1-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gateway.url}/openai/v1/chat/completions",
            headers={"authorization": f"Bearer {ticket.key}"},
            json=body,
        )
    assert answer.text.rstrip().endswith("data: [DONE]")
    assert model_server.requests[-1].body == {**body, "stream_options": {"include_usage": True}}
    assert (ticket.input_tokens, ticket.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert ticket.spent_usd > 0
    usage = ticket.events[-1]  # type: ignore[attr-defined]
    assert usage == (
        "usage",
        {
            "input_tokens": INPUT_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
            "cached_tokens": 0,
            "cost_usd": pytest.approx(ticket.spent_usd),
            "requests": 1,
            "source": "gateway",
        },
    )


async def test_a_spent_budget_holds_the_request_until_raised(
    gateway: Gateway, model_server: FakeModelServer
) -> None:
    told: list[tuple[float, float]] = []
    ticket = await gateway.issue(
        Ticket(
            session_id="s",
            attempt=1,
            budget_usd=0.01,
            spent_usd=0.02,
            on_budget=lambda spent, budget: told.append((spent, budget)),
        )
    )
    async with httpx.AsyncClient() as client:
        held = asyncio.create_task(
            client.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": ticket.key},
                json=ANTHROPIC_BODY,
            )
        )
        await asyncio.sleep(0.3)
        assert not held.done()
        assert told == [(0.02, 0.01)]
        assert model_server.requests == []
        ticket.set_budget(1.0)
        answer = await asyncio.wait_for(held, 10)
    assert answer.status_code == 200
    assert len(model_server.requests) == 1


async def test_a_request_held_on_budget_is_refused_when_the_ticket_ends(
    gateway: Gateway, model_server: FakeModelServer
) -> None:
    ticket = await gateway.issue(Ticket(session_id="s", attempt=1, budget_usd=2.0, spent_usd=2.0))
    keep = await gateway.issue(Ticket(session_id="t", attempt=1))  # keeps the gateway up
    async with httpx.AsyncClient() as client:
        held = asyncio.create_task(
            client.post(
                f"{gateway.url}/openai/v1/chat/completions",
                headers={"authorization": f"Bearer {ticket.key}"},
                json={"model": "m", "messages": []},
            )
        )
        await asyncio.sleep(0.3)
        await gateway.revoke(ticket)
        answer = await asyncio.wait_for(held, 10)
    assert answer.status_code == 402
    assert answer.json()["error"]["message"] == "budget reached: $2.00 of $2.00 — raise it or stop"
    assert model_server.requests == []
    await gateway.revoke(keep)


class GzipUpstream:
    """Answers every request with a gzipped Anthropic message, whatever it was asked."""

    MESSAGE: ClassVar[dict[str, Any]] = {
        "type": "message",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "zipped"}],
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }

    def __init__(self) -> None:
        body = gzip.compress(json.dumps(self.MESSAGE).encode())

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-encoding", "gzip")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_a_compressed_answer_passes_as_it_came_and_is_metered_decoded() -> None:
    upstream = GzipUpstream()
    gateway = Gateway(upstreams=Upstreams.from_environment(upstream_env(upstream.url)))
    ticket = await gateway.issue(Ticket(session_id="s", attempt=1))
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": ticket.key},
                json=ANTHROPIC_BODY,
            )
        assert answer.headers["content-encoding"] == "gzip"
        assert answer.json() == GzipUpstream.MESSAGE
        assert (ticket.input_tokens, ticket.output_tokens) == (7, 3)
    finally:
        await gateway.revoke(ticket)
        upstream.close()
