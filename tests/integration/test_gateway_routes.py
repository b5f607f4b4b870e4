"""Rate limits, fallbacks and routing through the real gateway, against fake model servers:
one shared backoff (no burst of retries), a fallback chain that says so, giving up past the
retry budget, and tier routing that rewrites the model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from telecoder.gateway import Gateway, Ticket
from telecoder.settings import Settings
from telecoder.store import EndpointRow
from tests.fakes.model_server import FakeModelServer

REAL = "sk-ant-REAL-routes-0123456789"
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def make_gateway(settings: Settings, store, env: dict[str, str], **changes: Any) -> Gateway:
    return Gateway.from_settings(settings.model_copy(update=changes), store, environ=env)


async def ask(gateway: Gateway, ticket: Ticket, body: dict[str, Any] = BODY) -> httpx.Response:
    env = gateway.env(ticket)
    headers = {
        "x-api-key": ticket.key,
        "anthropic-version": "2023-06-01",
        "x-test-tag": ticket.session_id,
    }
    async with httpx.AsyncClient(timeout=60) as c:
        return await c.post(f"{env['ANTHROPIC_BASE_URL']}/v1/messages", headers=headers, json=body)


def ticket_of(n: int, events: list[tuple[str, dict[str, Any]]], **kw: Any) -> Ticket:
    return Ticket(session_id=f"s{n}", attempt=1, on_event=lambda k, d: events.append((k, d)), **kw)


async def test_twenty_sessions_share_one_backoff_and_none_fails(settings, store):
    with FakeModelServer() as upstream:
        env = {"ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": REAL}
        gateway = make_gateway(settings, store, env)
        events: list[tuple[str, dict[str, Any]]] = []
        tickets = [await gateway.issue(ticket_of(n, events)) for n in range(20)]
        try:
            upstream.limit_for(2.0, "2")
            answers = await asyncio.gather(*(ask(gateway, t) for t in tickets))
            row = await store.endpoints.get("anthropic")
        finally:
            for t in tickets:
                await gateway.revoke(t)
    assert [a.status_code for a in answers] == [200] * 20
    log = sorted(upstream.log, key=lambda r: r.arrived)
    first_429 = min(r.answered for r in log if r.status == 429)
    # Each session's first request went at once (some got 429: those in the window); every
    # retry waited for the Retry-After from the first 429 — none went early, none was limited.
    firsts = {r.tag: r for r in reversed(log)}
    retries = [r for r in log if firsts[r.tag] is not r]
    assert retries
    assert len(log) == 20 + len(retries)
    early = [round(r.arrived - first_429, 3) for r in retries if r.arrived < first_429 + 1.95]
    assert not early
    assert all(r.status == 200 for r in retries)
    # One probe first, alone; the rest only once it had succeeded: no burst.
    probe = retries[0]
    assert all(r.arrived >= probe.answered - 0.005 for r in retries[1:])
    # Shared with the other gateways through the table.
    assert row is not None
    assert row.backoff_until is not None
    assert row.backoff_until >= first_429 + 1.9
    waits = [d for k, d in events if d.get("step") == "rate_limited"]
    assert waits
    assert "anthropic is rate limited: waiting" in waits[0]["message"]


async def test_a_fallback_chain_moves_on_when_the_first_endpoint_is_down(settings, store):
    with FakeModelServer() as second:
        await store.endpoints.add(
            EndpointRow(name="anthropic-2", url=second.url, kind="anthropic", key_env="KEY_2")
        )
        env = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": REAL,
               "KEY_2": "sk-second-0123456789"}  # fmt: skip
        gateway = make_gateway(
            settings,
            store,
            env,
            tier_standard=("anthropic:claude-sonnet-4-5", "anthropic-2:claude-haiku-4-5"),
        )
        events: list[tuple[str, dict[str, Any]]] = []
        ticket = await gateway.issue(ticket_of(1, events, tier="standard"))
        try:
            answer = await ask(gateway, ticket)
            again = await ask(gateway, ticket)
        finally:
            await gateway.revoke(ticket)
    assert (answer.status_code, again.status_code) == (200, 200)
    seen = second.model_requests()
    assert [r.body["model"] for r in seen] == ["claude-haiku-4-5"] * 2  # rewritten
    assert seen[0].headers["x-api-key"] == "sk-second-0123456789"
    fallbacks = [d for _, d in events if d.get("step") == "fallback"]
    assert fallbacks[0]["message"] == "anthropic is down, using anthropic-2 (claude-haiku-4-5)"
    assert len(fallbacks) == 1  # told once, not per request
    assert ticket.models_answered == {"claude-haiku-4-5"}


async def test_past_the_retry_budget_the_agent_gets_the_429_and_the_ticket_says_so(settings, store):
    with FakeModelServer() as upstream:
        env = {"ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": REAL}
        gateway = make_gateway(settings, store, env, gateway_retry_seconds=1.0)
        events: list[tuple[str, dict[str, Any]]] = []
        ticket = await gateway.issue(ticket_of(1, events))
        try:
            upstream.limit_for(30.0, "5")
            started = time.monotonic()
            answer = await ask(gateway, ticket)
            took = time.monotonic() - started
            other = await gateway.issue(ticket_of(2, events))
            closed = await ask(gateway, other)  # arrives while the endpoint is closed
        finally:
            await gateway.revoke(ticket)
            await gateway.revoke(other)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "5"
    assert took < 1.0  # a 5 s backoff past a 1 s budget: given up at once, not waited for
    assert ticket.rate_limited
    assert ticket.rate_limited_until == pytest.approx(time.time() + 5 - took, abs=1.0)
    assert len(upstream.model_requests()) == 1  # the second was not sent at all
    assert closed.status_code == 429
    assert 3 <= int(closed.headers["retry-after"]) <= 5
    assert closed.json()["error"]["message"].startswith("anthropic is rate limited: try again")
    assert other.rate_limited


async def test_a_tier_rewrites_the_model_in_the_body_or_the_gemini_path(settings, store):
    with FakeModelServer() as upstream:
        env = {
            "OPENAI_BASE_URL": f"{upstream.url}/v1",
            "OPENAI_API_KEY": "sk-openai-0123456789",
            "GOOGLE_GEMINI_BASE_URL": upstream.url,
            "GEMINI_API_KEY": "gemini-0123456789",
        }
        gateway = make_gateway(
            settings,
            store,
            env,
            tier_trivial=("anthropic:claude-haiku-4-5", "openai:gpt-5-mini", "gemini:g-flash"),
        )
        events: list[tuple[str, dict[str, Any]]] = []
        routed = await gateway.issue(ticket_of(1, events, tier="trivial"))
        pinned = await gateway.issue(ticket_of(2, events, tier="trivial", model="gpt-pinned"))
        try:
            async with httpx.AsyncClient(timeout=30) as c:
                for ticket in (routed, pinned):
                    base = gateway.env(ticket)
                    chat = await c.post(
                        f"{base['OPENAI_BASE_URL']}/chat/completions",
                        headers={"authorization": f"Bearer {ticket.key}"},
                        json={"model": "gpt-big", "messages": [{"role": "user", "content": "x"}]},
                    )
                    assert chat.status_code == 200, chat.text
                gemini = await c.post(
                    f"{gateway.env(routed)['GOOGLE_GEMINI_BASE_URL']}"
                    "/v1beta/models/gemini-2.5-pro:generateContent",
                    headers={"x-goog-api-key": routed.key},
                    json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
                )
                assert gemini.status_code == 200, gemini.text
        finally:
            await gateway.revoke(routed)
            await gateway.revoke(pinned)
    seen = upstream.model_requests()
    assert seen[0].body["model"] == "gpt-5-mini"  # the tier's openai entry
    assert seen[1].body["model"] == "gpt-big"  # a pinned model: not routed
    assert seen[2].path == "/v1beta/models/g-flash:generateContent"
    assert not [d for _, d in events if d.get("step") == "fallback"]
