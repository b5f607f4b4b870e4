"""What a metered response cost, in USD.

In order: the operator's overrides (setting ``prices``), then ``genai-prices`` (Pydantic's
offline price data: cache read and write prices, long-context tiers chosen by the request's whole
input), then the kept table below (models genai-prices does not know). A model none of them knows
costs ``None``: never a guess.

Model names are matched without case and without a ``provider/`` part (``models/gemini-2.5-pro``,
``anthropic/claude-sonnet-4-5``). Overrides and the kept table match the longest prefix
(``claude-sonnet-4`` prices ``claude-sonnet-4-5-20250929``).

genai-prices takes ~0.2 s to import and load: it is loaded on the first price asked for, or ahead
of time by ``preload()`` (off the event loop: ``await asyncio.to_thread(prices.preload)``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from telecoder.gateway.meter import Metered

_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. A cache price left out is the input price (no discount, no
    surcharge), so an incomplete override never under-counts."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost(self, used: Metered) -> float:
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            used.input_tokens * self.input
            + used.output_tokens * self.output
            + used.cache_read_tokens * read
            + used.cache_write_tokens * write
        )
        return round(total / _MILLION, 10)

    @classmethod
    def of(cls, values: Sequence[float]) -> Price:
        """``(input, output[, cache_read[, cache_write]])`` as the setting ``prices`` gives it."""
        if not 2 <= len(values) <= 4 or any(v < 0 for v in values):
            raise ValueError(f"a price is 2 to 4 non-negative numbers, not {tuple(values)}")
        return cls(*(float(v) for v in values))


# The kept table: list prices of models genai-prices may not know, from the vendors' pages.
KEPT: dict[str, Price] = {
    "claude-opus-4": Price(15.0, 75.0, 1.5, 18.75),
    "claude-sonnet-4": Price(3.0, 15.0, 0.3, 3.75),
    "claude-3-7-sonnet": Price(3.0, 15.0, 0.3, 3.75),
    "claude-haiku-4": Price(1.0, 5.0, 0.1, 1.25),
    "claude-3-5-haiku": Price(0.8, 4.0, 0.08, 1.0),
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


def _name(model: str) -> str:
    return model.rsplit("/", 1)[-1].strip().lower()


def _longest_prefix(name: str, table: Mapping[str, Price]) -> Price | None:
    best = max((key for key in table if name.startswith(key)), key=len, default=None)
    return table[best] if best is not None else None


def kept_price(model: str | None) -> Price | None:
    """The kept table's price of ``model`` (flat list prices, no tiers)."""
    return _longest_prefix(_name(model), KEPT) if model else None


class _GenaiPrices:
    """genai-prices, imported on first use (once, whichever thread asks first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calc: Any = None
        self._usage: Any = None

    def load(self) -> None:
        with self._lock:
            if self._calc is None:
                from genai_prices import Usage, calc_price

                with contextlib.suppress(LookupError):  # the first lookup loads the data
                    calc_price(Usage(input_tokens=0, output_tokens=0), "gpt-4o")
                self._usage = Usage
                self._calc = calc_price

    def cost(self, name: str, used: Metered) -> float | None:
        if self._calc is None:
            self.load()
        usage = self._usage(
            input_tokens=used.input_tokens + used.cache_read_tokens + used.cache_write_tokens,
            output_tokens=used.output_tokens,
            cache_read_tokens=used.cache_read_tokens,
            cache_write_tokens=used.cache_write_tokens,
        )
        try:
            return round(float(self._calc(usage, name).total_price), 10)
        except (LookupError, ValueError, ArithmeticError):  # unknown model, or unpriceable usage
            return None


_GENAI = _GenaiPrices()


class Prices:
    """Prices responses: overrides, then genai-prices, then the kept table; else ``None``."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = {_name(model): price for model, price in (overrides or {}).items()}

    @classmethod
    def from_setting(cls, prices: Mapping[str, Sequence[float]]) -> Prices:
        """From the setting ``prices`` (model -> input, output[, cache read[, cache write]])."""
        return cls({model: Price.of(values) for model, values in prices.items()})

    def preload(self) -> None:
        """Load genai-prices now (blocking, ~0.2 s) rather than on the first price asked for."""
        _GENAI.load()

    def cost(self, model: str | None, used: Metered, *, api: str | None = None) -> float | None:
        """What ``used`` cost with ``model`` (``used.model`` when ``model`` is ``None``);
        ``None`` for a model nobody prices. Models answered by Ollama (``api="ollama"``) are
        priced by overrides only: a local model has no list price, and a hosted namesake's
        (``deepseek-r1:8b``) would be a guess."""
        model = model or used.model
        if not model:
            return None
        name = _name(model)
        override = _longest_prefix(name, self._overrides)
        if override is not None:
            return override.cost(used)
        if api == "ollama":
            return None
        priced = _GENAI.cost(name, used)
        if priced is not None:
            return priced
        kept = _longest_prefix(name, KEPT)
        return kept.cost(used) if kept is not None else None
