"""Routing: tiers from the task, tier lists from the settings, hops, rewriting, fallbacks."""

from __future__ import annotations

import pytest

from telecoder.errors import BadInput
from telecoder.gateway.routing import (
    Entry,
    Hop,
    Routes,
    Tier,
    choose_tier,
    fallback_message,
    files_named,
    in_order,
    named_hop,
    parse_chain,
    parse_tier,
    requested_model,
    rewrite,
)

KINDS = {
    "anthropic": "anthropic",
    "anthropic-2": "anthropic",
    "openai": "openai",
    "gemini": "gemini",
    "ollama": "ollama",
}


def test_parse_chain_and_tier():
    assert parse_chain(["anthropic:claude-haiku-4-5", " openai:gpt-5-mini ", ""]) == (
        Entry("anthropic", "claude-haiku-4-5"),
        Entry("openai", "gpt-5-mini"),
    )
    assert parse_chain(["ollama:qwen3:8b"]) == (Entry("ollama", "qwen3:8b"),)
    with pytest.raises(BadInput, match="TELECODER_TIER_TRIVIAL: 'haiku' is not endpoint:model"):
        Routes.from_settings(["haiku"], [], [])
    assert parse_tier("Complex") == Tier.COMPLEX
    assert parse_tier(None) is None
    with pytest.raises(BadInput, match="unknown tier 'huge'"):
        parse_tier("huge")


def test_files_named():
    prompt = "fix src/app.py and tests/test_app.py, see README.md (e.g. the docs) v1.2"
    assert files_named(prompt) == {"src/app.py", "tests/test_app.py", "README.md"}


@pytest.mark.parametrize(
    ("prompt", "origin", "tier"),
    [
        ("fix the typo in README.md", None, Tier.TRIVIAL),
        ("add retries to the client " + "with care " * 30, None, Tier.STANDARD),
        ("x" * 2001, None, Tier.COMPLEX),
        ("touch a.py b.py c.py d.py e.py", None, Tier.COMPLEX),
        ("fix it", {"labels": ["refactor"]}, Tier.COMPLEX),
        ("x" * 3000, {"labels": ["docs"]}, Tier.TRIVIAL),
        ("fix it", {"labels": ["tier:standard", "docs"]}, Tier.STANDARD),
        ("fix it", {"labels": "telecoder:complex"}, Tier.COMPLEX),
    ],
)
def test_choose_tier(prompt, origin, tier):
    assert choose_tier(prompt, origin) == tier


def routes() -> Routes:
    return Routes.from_settings(
        ["anthropic:claude-haiku-4-5", "openai:gpt-5-mini"],
        ["anthropic:claude-sonnet-4-5", "anthropic-2:claude-sonnet-4-5"],
        [],
    )


def test_hops_follow_the_tier_list_of_the_requests_api():
    r = routes()
    assert r.hops("anthropic", tier="standard", pinned=False, kinds=KINDS, default="anthropic") == [
        Hop("anthropic", "claude-sonnet-4-5"),
        Hop("anthropic-2", "claude-sonnet-4-5"),
    ]
    # Only entries speaking the request's API: no protocol translation.
    assert r.hops("openai-chat", tier="trivial", pinned=False, kinds=KINDS, default="openai") == [
        Hop("openai", "gpt-5-mini")
    ]
    # No entry for that API, an empty tier, a pinned model, no tier: the default endpoint.
    for api, tier, pinned in (
        ("gemini", "trivial", False),
        ("anthropic", "complex", False),
        ("anthropic", "standard", True),
        ("anthropic", None, False),
    ):
        default = {"gemini": "gemini"}.get(api, "anthropic")
        assert r.hops(api, tier=tier, pinned=pinned, kinds=KINDS, default=default) == [Hop(default)]
    assert r.hops("ollama", tier=None, pinned=False, kinds=KINDS, default=None) == []


def test_a_model_naming_its_endpoint_goes_there_and_ollama_serves_openai_chat():
    kinds = {**KINDS, "local": "ollama"}
    for api in ("ollama", "openai-chat"):  # Ollama answers both
        assert named_hop("local:qwen2.5-coder:7b", api, kinds) == Hop("local", "qwen2.5-coder:7b")
    assert named_hop("local:qwen2.5-coder:7b", "anthropic", kinds) is None  # not its API
    assert named_hop("openai:gpt-5", "openai-chat", kinds) == Hop("openai", "gpt-5")
    for model in ("qwen2.5-coder:7b", "gpt-5", "local:", "", None):  # no endpoint named
        assert named_hop(model, "ollama", kinds) is None
    r = Routes({Tier.STANDARD: parse_chain(["local:qwen3", "openai:gpt-5"])})
    # Pinned or not, a model naming its endpoint wins over the tier and the default.
    assert r.hops(
        "openai-chat", tier=None, pinned=True, kinds=kinds, default="openai", model="local:m"
    ) == [Hop("local", "m")]
    # A tier's Ollama entry serves OpenAI's Chat Completions too (not the Responses API).
    assert r.hops("openai-chat", tier="standard", pinned=False, kinds=kinds, default="openai") == [
        Hop("local", "qwen3"),
        Hop("openai", "gpt-5"),
    ]
    assert r.hops(
        "openai-responses", tier="standard", pinned=False, kinds=kinds, default="openai"
    ) == [Hop("openai", "gpt-5")]


def test_in_order_puts_unusable_endpoints_last():
    hops = [Hop("a"), Hop("b"), Hop("c")]
    assert in_order(hops, lambda name: name != "a") == [Hop("b"), Hop("c"), Hop("a")]
    assert in_order(hops, lambda name: False) == hops


def test_rewrite_the_model():
    body = {"model": "claude-sonnet-4-5", "messages": []}
    path, new = rewrite("anthropic", "/v1/messages", body, "claude-haiku-4-5")
    assert (path, new["model"], body["model"]) == (
        "/v1/messages",
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
    )
    path, new = rewrite(
        "gemini", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", {"contents": []}, "g-2"
    )
    assert path == "/v1beta/models/g-2:streamGenerateContent"
    assert new == {"contents": []}
    assert requested_model("gemini", path, {}) == "g-2"
    assert requested_model("openai-chat", "/v1/chat/completions", {"model": "m"}) == "m"


def test_fallback_message():
    text = fallback_message("anthropic", "is down", Hop("anthropic-2", "claude-sonnet-4-5"))
    assert text == "anthropic is down, using anthropic-2 (claude-sonnet-4-5)"
