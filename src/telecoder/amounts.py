"""Amounts people type: durations (``90s``, ``30m``, ``2h``, ``1h30m``) and dollars (``2.00``,
``$2``, ``+1.00``). Pure parsing, shared by the CLI, the API and ``.telecoder.yml``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from telecoder.errors import BadInput

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_MONEY = re.compile(r"^([+]?)\$?(\d+(?:\.\d*)?|\.\d+)$")


def duration(text: str | float | int) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``, or a bare number of
    seconds. ``BadInput`` for anything else, zero or negative."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(raw)
        except ValueError:
            parts = _DURATION.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise BadInput(f"not a duration: {text!r} (e.g. 90s, 30m, 2h, 1h30m)") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadInput(f"a duration must be positive, not {text!r}")
    return seconds


def shown_duration(seconds: float) -> str:
    """``1h30m``, ``45s``: the shortest exact way to write whole seconds."""
    whole = round(seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) or f"{seconds:g}s"


def dollars(text: str | float) -> float:
    """A non-negative amount of US dollars: ``2``, ``2.00``, ``$2.50``."""
    change = budget_change(text)
    if change.add:
        raise BadInput(f"not an amount: {text!r} (a + adds to a budget; give the amount alone)")
    return change.amount


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """``+1.00`` adds a dollar to a budget; ``5.00`` sets it to five."""

    amount: float
    add: bool = False

    def apply(self, current: float | None) -> float:
        return (current or 0.0) + self.amount if self.add else self.amount


def budget_change(text: str | float) -> BudgetChange:
    raw = str(text).strip().replace(",", "")
    found = _MONEY.match(raw)
    if found is None:
        raise BadInput(f"not an amount of dollars: {text!r} (e.g. 5.00 to set, +1.00 to add)")
    amount = float(found.group(2))
    if not math.isfinite(amount) or amount > 1_000_000:
        raise BadInput(f"{text!r} is not a sensible budget")
    return BudgetChange(amount=amount, add=found.group(1) == "+")
