"""What a model's tokens cost, for CLIs that report tokens but no cost (Codex, Gemini, Qwen, ACP).

List prices in USD per million tokens (input, output, cached input), matched by the longest
prefix of the model name after any ``provider/`` part. An unknown model has no price: its cost
is ``None``, never a guess.
"""

from __future__ import annotations

from typing import NamedTuple


class Price(NamedTuple):
    input: float
    output: float
    cached_input: float


# USD per 1M tokens, from the vendors' public price lists.
PRICES: dict[str, Price] = {
    "claude-opus-4": Price(15.0, 75.0, 1.5),
    "claude-sonnet-4": Price(3.0, 15.0, 0.3),
    "claude-3-7-sonnet": Price(3.0, 15.0, 0.3),
    "claude-haiku-4": Price(1.0, 5.0, 0.1),
    "claude-3-5-haiku": Price(0.8, 4.0, 0.08),
    "gpt-5-nano": Price(0.05, 0.4, 0.005),
    "gpt-5-mini": Price(0.25, 2.0, 0.025),
    "gpt-5": Price(1.25, 10.0, 0.125),
    "gpt-4.1-nano": Price(0.1, 0.4, 0.025),
    "gpt-4.1-mini": Price(0.4, 1.6, 0.1),
    "gpt-4.1": Price(2.0, 8.0, 0.5),
    "gpt-4o-mini": Price(0.15, 0.6, 0.075),
    "gpt-4o": Price(2.5, 10.0, 1.25),
    "o4-mini": Price(1.1, 4.4, 0.275),
    "o3": Price(2.0, 8.0, 0.5),
    "gemini-2.5-pro": Price(1.25, 10.0, 0.125),
    "gemini-2.5-flash-lite": Price(0.1, 0.4, 0.01),
    "gemini-2.5-flash": Price(0.3, 2.5, 0.03),
    "qwen3-coder-plus": Price(1.0, 5.0, 0.1),
    "qwen3-coder-flash": Price(0.3, 1.5, 0.03),
}


def price_of(model: str | None) -> Price | None:
    if not model:
        return None
    name = model.rsplit("/", 1)[-1].lower()
    best = max((key for key in PRICES if name.startswith(key)), key=len, default=None)
    return PRICES[best] if best is not None else None


def cost_usd(
    model: str | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> float | None:
    """The cost of a run's tokens; ``cached_tokens`` are the part of ``input_tokens`` read from
    the cache."""
    price = price_of(model)
    if price is None:
        return None
    fresh = max(input_tokens - cached_tokens, 0)
    total = fresh * price.input + cached_tokens * price.cached_input + output_tokens * price.output
    return round(total / 1_000_000, 8)
