"""``/api/workers``: the worker processes sharing this database, as ``telecoder workers``."""

from __future__ import annotations

from fastapi import APIRouter

from telecoder.server.deps import PrincipalDep, StoreDep
from telecoder.server.schemas import ErrorOut, WorkerOut

router = APIRouter(prefix="/api/workers", tags=["workers"])


@router.get(
    "",
    responses={401: {"model": ErrorOut, "description": "No or a wrong API token."}},
    summary="Worker processes: host, slots, engines, state",
)
async def list_workers(store: StoreDep, _: PrincipalDep, live: bool = False) -> list[WorkerOut]:
    """Newest first. A worker that stopped renewing its heartbeat shows ``offline``;
    ``live=true`` leaves offline workers out."""
    found = await store.workers.list(include_offline=not live)
    return [WorkerOut.of(w) for w in found]
