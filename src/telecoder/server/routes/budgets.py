"""``/api/budgets``: the period budgets (daily, monthly; global or per user), as
``telecoder budgets``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from telecoder.server.cost_schemas import PeriodBudgetOut, PeriodBudgetSet
from telecoder.server.deps import PrincipalDep, SettingsDep, StoreDep, limit_writes
from telecoder.server.schemas import ErrorOut
from telecoder.store.budgets import GLOBAL, defaults_of, scope_of

router = APIRouter(prefix="/api/budgets", tags=["budgets"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
}


@router.get("", responses=_ERRORS, summary="Period budgets and what each spent")
async def list_budgets(
    store: StoreDep, settings: SettingsDep, _: PrincipalDep
) -> list[PeriodBudgetOut]:
    """Every limit in force — those set, then the settings' global defaults — with what its
    period spent so far, the alert level reached (80, 90, 100) and whether new sessions wait."""
    defaults = defaults_of(settings.budget_daily_usd, settings.budget_monthly_usd)
    found = await store.budgets.status(defaults)
    return [PeriodBudgetOut.model_validate(b.to_dict()) for b in found]


@router.put(
    "",
    dependencies=[Depends(limit_writes)],
    responses={
        **_ERRORS,
        422: {"model": ErrorOut, "description": "Invalid input; ``fields`` says which."},
    },
    summary="Set (or, with usd null, remove) a period budget",
)
async def put_budget(
    body: PeriodBudgetSet, store: StoreDep, settings: SettingsDep, _: PrincipalDep
) -> list[PeriodBudgetOut]:
    """Sessions a spent budget held back start as soon as the new limit allows. Returns every
    budget, as ``GET`` does."""
    scope = scope_of(body.user) if body.user else GLOBAL
    if body.usd is None:
        await store.budgets.remove(scope, body.period)
    else:
        await store.budgets.set(scope, body.period, body.usd)
    return await list_budgets(store, settings, _)
