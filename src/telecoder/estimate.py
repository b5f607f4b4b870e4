"""What a task will likely cost, from its repository's history of similar sessions.

The history is the repository's finished sessions (``Costs.history``). The estimate uses the
narrowest pool that has enough similar sessions — same engine and model, then same engine, then
the whole repository — and, when none has, the narrowest pool that has any session at all
(saying so). Two prompts are similar when they share a quarter of their words, or share a word
and are about as long (within a factor of two). The estimate is the median of those sessions'
costs with their range, and how many sessions it rests on; with no history, it says so.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from telecoder.store import Store
from telecoder.store.costs import Past

MIN_SIMILAR = 3  # fewer similar sessions than this in a pool: look in a wider one
MAX_BASIS = 50  # the latest sessions an estimate rests on
SHOWN = 10  # session ids an estimate names
MAX_PROMPT = 8000  # what an estimate reads of a prompt (the API takes it in a query string)
_WORD = re.compile(r"[a-z0-9_]{3,}")
_COMMON = (  # words that say nothing about a task
    "the and for with that this from into then than are was were has have not but all any "
    "can you your our its use when what which who how also only just please should would "
    "could there their them they these those about after before over under"
)
_STOP = frozenset(_COMMON.split())


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    repo: str
    engine: str
    model: str | None
    based_on: int = 0  # how many sessions
    basis: str = "no history"  # which sessions, in words
    median_usd: float | None = None
    low_usd: float | None = None
    high_usd: float | None = None
    median_tokens: int | None = None  # input + output
    sessions: list[str] = field(default_factory=list)  # the latest of them, newest first

    def to_dict(self) -> dict[str, Any]:
        """The shape of ``GET /api/costs/estimate`` and ``telecoder run --estimate --json``."""
        return {
            "repo": self.repo,
            "engine": self.engine,
            "model": self.model,
            "based_on": self.based_on,
            "basis": self.basis,
            "median_usd": self.median_usd,
            "low_usd": self.low_usd,
            "high_usd": self.high_usd,
            "median_tokens": self.median_tokens,
            "sessions": self.sessions,
        }


async def estimate(
    store: Store, *, repo: str, engine: str, model: str | None, prompt: str
) -> Estimate:
    history = await store.costs.history(repo)
    return estimate_from(history, repo=repo, engine=engine, model=model, prompt=prompt[:MAX_PROMPT])


def estimate_from(
    history: Sequence[Past], *, repo: str, engine: str, model: str | None, prompt: str
) -> Estimate:
    chosen, basis = choose(history, engine=engine, model=model, prompt=prompt)
    if not chosen:
        return Estimate(repo=repo, engine=engine, model=model)
    chosen = chosen[:MAX_BASIS]
    costs = [p.cost_usd for p in chosen]
    return Estimate(
        repo=repo,
        engine=engine,
        model=model,
        based_on=len(chosen),
        basis=basis,
        median_usd=statistics.median(costs),
        low_usd=min(costs),
        high_usd=max(costs),
        median_tokens=int(statistics.median(p.input_tokens + p.output_tokens for p in chosen)),
        sessions=[p.session_id for p in chosen[:SHOWN]],
    )


def choose(
    history: Sequence[Past], *, engine: str, model: str | None, prompt: str
) -> tuple[list[Past], str]:
    """The sessions an estimate rests on (newest first) and why those."""
    pools = [
        ("same engine and model", [p for p in history if p.engine == engine and p.model == model]),
        ("same engine", [p for p in history if p.engine == engine]),
        ("any engine", list(history)),
    ]
    for scope, pool in pools:
        near = [p for p in pool if similar(p.prompt, prompt)]
        if len(near) >= MIN_SIMILAR:
            return near, f"{scope}, similar prompts"
    for scope, pool in pools:
        if pool:
            return pool, f"{scope}, any prompt (too few similar ones)"
    return [], "no history"


def words(prompt: str) -> frozenset[str]:
    return frozenset(_WORD.findall(prompt.lower())) - _STOP


def similar(a: str, b: str) -> bool:
    wa, wb = words(a), words(b)
    shared = len(wa & wb)
    if not shared:
        return False
    if shared / len(wa | wb) >= 0.25:
        return True
    short, long = sorted((len(a.strip()), len(b.strip())))
    return long <= 2 * short
