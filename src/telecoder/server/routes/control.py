"""``POST /api/pause`` and ``/api/resume`` (as ``telecoder pause``/``resume``): stop and restart
every worker's claims on every host, running sessions finishing; ``GET /api/health/history``: the
supervisor's healing actions, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from telecoder.server.control_schemas import HealthEventOut, PauseOut
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, limit_writes
from telecoder.server.schemas import ErrorOut

router = APIRouter(prefix="/api", tags=["control"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
}


@router.post(
    "/pause",
    responses=_ERRORS,
    dependencies=[Depends(limit_writes)],
    summary="Stop all claiming everywhere; running sessions finish",
)
async def pause(server: StateDep, principal: PrincipalDep) -> PauseOut:
    """Idempotent: pausing again keeps the first pause's time and author."""
    server.pause = await server.store.control.pause(by=principal.name)
    return PauseOut.model_validate(server.pause.to_dict())


@router.post(
    "/resume",
    responses=_ERRORS,
    dependencies=[Depends(limit_writes)],
    summary="Let workers claim sessions again",
)
async def resume(server: StateDep, _: PrincipalDep) -> PauseOut:
    server.pause = await server.store.control.resume()
    return PauseOut.model_validate(server.pause.to_dict())


@router.get(
    "/health/history",
    responses=_ERRORS,
    summary="What the supervisor did: requeues, prunes, endpoints marked unhealthy",
)
async def health_history(
    store: StoreDep,
    _: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
) -> list[HealthEventOut]:
    found = await store.health.history(limit=limit, kind=kind)
    return [HealthEventOut.model_validate(e.to_dict()) for e in found]
