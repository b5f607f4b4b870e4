"""What a run's tokens cost, for CLIs that report tokens but no cost (Codex, Gemini, Qwen, ACP).

The prices are the gateway's kept table (``telecoder.gateway.prices.KEPT``): flat list prices, as a
run's totals span many requests (a long-context tier applies per request: the gateway prices
each one). An unknown model has no price: its cost is ``None``, never a guess.
"""

from __future__ import annotations

from telecoder.gateway.prices import kept_price


def cost_usd(
    model: str | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> float | None:
    """The cost of a run's tokens; ``cached_tokens`` are the part of ``input_tokens`` read from
    the cache."""
    price = kept_price(model)
    if price is None:
        return None
    read = price.input if price.cache_read is None else price.cache_read
    fresh = max(input_tokens - cached_tokens, 0)
    total = fresh * price.input + cached_tokens * read + output_tokens * price.output
    return round(total / 1_000_000, 8)
