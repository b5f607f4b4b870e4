"""The HTTP boundary of money: period budgets, cost reports and estimates (``/api/budgets``,
``/api/costs``, ``/api/estimate``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from telecoder.domain import SessionStatus
from telecoder.server.schemas import IsoTime, Text, _In
from telecoder.store.costs import By


class PeriodBudgetSet(_In):
    """A period budget: ``usd`` null removes it."""

    period: Literal["daily", "monthly"]
    usd: float | None = Field(ge=0, le=1_000_000, description="The limit; null removes it.")
    user: Text | None = Field(
        default=None,
        pattern=r"^[^\s]{1,200}$",
        description="Whose sessions (an API token's name); none: all sessions together.",
    )


class PeriodBudgetOut(BaseModel):
    """A period budget and where it stands (``telecoder budgets list --json``)."""

    scope: str = Field(description="global, or user:NAME.")
    user: str | None
    period: Literal["daily", "monthly"]
    limit_usd: float
    spent_usd: float = Field(description="usage.cost_usd summed since the period began (UTC).")
    percent: float
    reached: bool = Field(description="New sessions wait until the period rolls over.")
    period_key: str = Field(description="The current period: 2026-11-28 or 2026-11.")
    alerted_level: int = Field(description="The last alert sent this period: 0, 80, 90, 100.")
    source: Literal["set", "settings"] = Field(
        description="set: telecoder budgets set / PUT; settings: TELECODER_BUDGET_*_USD."
    )


# --- costs ---


class CostFigures(BaseModel):
    """Sums over the model requests the gateway forwarded (``usage`` rows)."""

    requests: int
    input_tokens: int = Field(description="Fresh input tokens; cache reads and writes apart.")
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float = Field(description="What the priced requests cost, in US dollars.")
    unpriced_requests: int = Field(
        description="Requests whose model has no known price: counted, never priced, so "
        "cost_usd is a lower bound while this is above 0."
    )


class CostGroup(CostFigures):
    key: str | None = Field(description="The model, engine, … (null: the rows had none).")


class CostDay(CostFigures):
    day: str = Field(description="A UTC day, 2026-11-01.", json_schema_extra={"format": "date"})


class SessionCost(CostFigures):
    session_id: str
    prompt: str | None = Field(description="null: the session is gone; its usage stays.")
    repo: str | None
    engine: str | None
    status: SessionStatus | None


class CostsOut(BaseModel):
    """Costs over ``[since, until)``: the shape of ``telecoder costs --json``."""

    by: By | None
    since: IsoTime | None
    until: IsoTime | None
    total: CostFigures
    groups: list[CostGroup] = Field(description="Costliest first; for ``by=day``, the days.")
    more_groups: bool = Field(description="There were more groups than ``limit``.")
    days: list[CostDay] = Field(description="Every UTC day of the range, days without use at 0.")
    top_sessions: list[SessionCost] = Field(description="The costliest sessions, costliest first.")
    unpriced_models: list[str] = Field(description="Models of the unpriced requests.")


class EstimateOut(BaseModel):
    """What a task would likely cost: the shape of ``telecoder run --estimate --json``."""

    repo: str
    engine: str
    model: str | None
    based_on: int = Field(description="How many past sessions the estimate rests on (0: none).")
    basis: str = Field(description="Which sessions, in words, e.g. 'same engine, similar prompts'.")
    median_usd: float | None
    low_usd: float | None
    high_usd: float | None
    median_tokens: int | None = Field(description="Input plus output tokens, the median.")
    sessions: list[str] = Field(description="The latest of those sessions, newest first.")
