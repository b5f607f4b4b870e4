"""The gateway's prices: genai-prices, the operator's overrides, the kept table; never a guess."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from telecoder.engines.prices import cost_usd
from telecoder.gateway.meter import Metered
from telecoder.gateway.prices import KEPT, Price, Prices, kept_price
from telecoder.settings import Settings


def used(fresh: int = 0, output: int = 0, read: int = 0, write: int = 0) -> Metered:
    return Metered("ignored", fresh, output, read, write)


def test_a_known_model() -> None:
    prices = Prices()
    # gpt-4o-mini: $0.15 in, $0.60 out per million
    assert prices.cost("gpt-4o-mini", used(1000, 500)) == pytest.approx(0.00045)
    assert prices.cost("openai/gpt-4o-mini", used(1000, 500)) == pytest.approx(0.00045)
    assert prices.cost("GPT-4o-mini", used(1000, 500)) == pytest.approx(0.00045)


def test_cache_reads_and_writes_have_their_own_prices() -> None:
    prices = Prices()
    # claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million
    cost = prices.cost("claude-sonnet-4-5-20250929", used(1000, 500, read=2000, write=100))
    assert cost == pytest.approx((1000 * 3 + 500 * 15 + 2000 * 0.3 + 100 * 3.75) / 1e6)
    fresh_only = prices.cost("claude-sonnet-4-5", used(3100, 500))
    assert cost is not None
    assert fresh_only is not None
    assert cost < fresh_only


def test_long_context_prices_by_tier() -> None:
    prices = Prices()
    # past 200k input tokens in one request, every token of it costs the higher rate ($6 in)
    assert prices.cost("claude-sonnet-4-5", used(100_000)) == pytest.approx(0.3)
    assert prices.cost("claude-sonnet-4-5", used(1_000_000)) == pytest.approx(6.0)
    # the tier counts cached input too
    tiered = prices.cost("claude-sonnet-4-5", used(1000, read=300_000))
    assert tiered == pytest.approx((1000 * 6 + 300_000 * 0.6) / 1e6)


def test_an_unknown_model_costs_none() -> None:
    prices = Prices()
    assert prices.cost("fake-model", used(100, 100)) is None
    assert prices.cost(None, Metered(None, 100, 100)) is None
    assert prices.cost("", used(100, 100)) is None


def test_a_local_ollama_model_is_priced_by_overrides_only() -> None:
    m = 1_000_000
    assert Prices().cost("deepseek-r1", used(m, m)) is not None  # the hosted model
    assert Prices().cost("deepseek-r1:8b", used(m, m), api="ollama") is None
    free = Prices({"deepseek-r1": Price(0, 0)})
    assert free.cost("deepseek-r1:8b", used(m, m), api="ollama") == 0


def test_the_response_model_is_used_when_none_is_given() -> None:
    assert Prices().cost(None, Metered("gpt-4o-mini", 1000, 500)) == pytest.approx(0.00045)


def test_overrides_win_and_match_by_prefix() -> None:
    prices = Prices({"my-model": Price(1.0, 5.0, 0.1, 1.25), "gpt-4o-mini": Price(0, 0)})
    m = 1_000_000
    assert prices.cost("my-model-v2", used(m, m, m, m)) == pytest.approx(7.35)
    assert prices.cost("vendor/My-Model", used(m)) == pytest.approx(1.0)
    assert prices.cost("gpt-4o-mini", used(1000, 500)) == 0
    # a left-out cache price is the input price
    assert Prices({"x": Price(2.0, 4.0)}).cost("x", used(0, 0, m, m)) == pytest.approx(4.0)


def test_the_kept_table_prices_what_genai_prices_does_not_know() -> None:
    assert "qwen3-coder-plus" in KEPT
    assert Prices().cost("qwen3-coder-plus", used(1_000_000, 1_000_000)) == pytest.approx(6.0)
    assert kept_price("qwen/qwen3-coder-plus-2025") == KEPT["qwen3-coder-plus"]
    assert kept_price("fake-model") is None
    assert kept_price(None) is None


def test_engines_price_run_totals_from_the_kept_table_without_tiers() -> None:
    assert cost_usd("claude-sonnet-4-5", 1_000_000, 0) == pytest.approx(3.0)
    assert cost_usd("gpt-5", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(0.125)
    assert cost_usd("fake-model", 100, 100) is None


def test_the_prices_setting() -> None:
    settings = Settings(prices="my-model=1.0/5.0/0.1/1.25, llama3 = 0/0 ,")
    assert settings.prices == {"my-model": (1.0, 5.0, 0.1, 1.25), "llama3": (0.0, 0.0)}
    prices = Prices.from_setting(settings.prices)
    assert prices.cost("llama3:latest", used(5000, 5000)) == 0
    assert Settings().prices == {}


def test_the_prices_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECODER_PRICES", "anthropic/my-model=1/5/0.1/1.25")
    assert Settings().prices == {"anthropic/my-model": (1.0, 5.0, 0.1, 1.25)}


@pytest.mark.parametrize("bad", ["my-model", "m=1", "m=1/2/3/4/5", "m=a/b", "=1/2", "m=-1/2"])
def test_a_bad_price_is_refused_with_the_format(bad: str) -> None:
    with pytest.raises(ValidationError, match="model=input/output"):
        Settings(prices=bad)


def test_genai_prices_loads_lazily() -> None:
    script = (
        "import sys; import telecoder.gateway.prices as p; "
        "assert 'genai_prices' not in sys.modules; "
        "p.Prices().preload(); assert 'genai_prices' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
