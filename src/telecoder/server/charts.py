"""Charts drawn on the server: a bar per day as inline SVG geometry (no script, no build)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telecoder.server.render import money
from telecoder.store.costs import Group

WIDTH = 720
HEIGHT = 160
GAP = 0.2  # of a bar's slot


@dataclass(frozen=True, slots=True)
class Bar:
    day: str
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip: day, cost, requests


@dataclass(frozen=True, slots=True)
class Chart:
    bars: list[Bar]
    top: str  # what the full height stands for
    first: str
    last: str
    width: int = WIDTH
    height: int = HEIGHT


def day_bars(days: Sequence[Group]) -> Chart | None:
    """A bar per day, its height the day's cost; None when there are no days."""
    if not days:
        return None
    peak = max(d.figures.cost_usd for d in days)
    slot = WIDTH / len(days)
    bars = []
    for i, d in enumerate(days):
        f = d.figures
        height = HEIGHT * f.cost_usd / peak if peak > 0 else 0.0
        if f.requests and height < 1:
            height = 1.0  # a day with traffic shows, even when it cost (next to) nothing
        title = f"{d.key}: {money(f.cost_usd)}, {f.requests} requests"
        if f.unpriced_requests:
            title += f" ({f.unpriced_requests} unpriced)"
        bars.append(
            Bar(
                day=d.key or "",
                x=round(i * slot + slot * GAP / 2, 2),
                y=round(HEIGHT - height, 2),
                width=round(slot * (1 - GAP), 2),
                height=round(height, 2),
                title=title,
            )
        )
    return Chart(bars=bars, top=money(peak), first=days[0].key or "", last=days[-1].key or "")
