"""``/api/health`` and ``/api/version``: open to all, for load balancers and clients."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from telecoder import __version__
from telecoder.gateway.endpoints import env_specs, listing
from telecoder.runtimes.docker import unavailable as docker_unavailable
from telecoder.runtimes.sandbox import unavailable
from telecoder.server.deps import StateDep
from telecoder.server.schemas import EndpointOut, HealthOut, VersionOut, WorkersOut

router = APIRouter(prefix="/api", tags=["meta"])

API_VERSION = 1


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "The database or a worker is down."}},
    summary="Is the server able to work?",
)
async def health(state: StateDep) -> JSONResponse:
    """``ok`` when the database answers and every embedded worker runs; else 503."""
    database: Literal["ok", "unreachable"] = "ok"
    try:
        await state.store.events.last_change()
    except Exception:  # any failure to answer means unreachable, whatever the driver says
        database = "unreachable"
    workers = WorkersOut(embedded=state.workers.embedded, alive=state.workers.alive)
    runtime = state.settings.runtime
    problem: str | None = None
    if runtime == "sandbox":
        problem = unavailable(state.settings.sandbox_bwrap)
    elif runtime == "docker":
        problem = await docker_unavailable(state.settings.docker_host, state.settings.docker_image)
    sandbox: Literal["ok", "unsafe", "unavailable"] = (
        "unsafe" if runtime == "local" else "unavailable" if problem else "ok"
    )
    ok = database == "ok" and workers.alive == workers.embedded and sandbox != "unavailable"
    endpoints: list[EndpointOut] = []
    if database == "ok":
        endpoints = [EndpointOut(**e.to_dict()) for e in await listing(state.store, env_specs())]
    body = HealthOut(
        status="ok" if ok else "degraded",
        database=database,
        workers=workers,
        watchers=state.bus.watcher_count,
        runtime=runtime,
        sandbox=sandbox,
        sandbox_problem=problem,
        endpoints=endpoints,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/version", summary="The server's version")
async def version() -> VersionOut:
    return VersionOut(version=__version__, api=API_VERSION)
