"""``/api/health`` and ``/api/version``: open to all, for load balancers and clients; and
``/api/status`` (with a token): what ``telecoder status`` shows."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from telecoder import __version__, opsstatus
from telecoder.gateway.endpoints import env_specs, listing
from telecoder.runtimes.docker import unavailable as docker_unavailable
from telecoder.runtimes.sandbox import unavailable
from telecoder.server import roles
from telecoder.server.deps import PrincipalDep, StateDep
from telecoder.server.schemas import EndpointOut, ErrorOut, HealthOut, VersionOut, WorkersOut
from telecoder.store import PauseState

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
    pause = PauseState(paused=False)
    if database == "ok":
        endpoints = [EndpointOut(**e.to_dict()) for e in await listing(state.store, env_specs())]
        pause = await state.store.control.pause_state()
    body = HealthOut(
        status="ok" if ok else "degraded",
        database=database,
        workers=workers,
        watchers=state.bus.watcher_count,
        runtime=runtime,
        sandbox=sandbox,
        sandbox_problem=problem,
        endpoints=endpoints,
        paused=pause.paused,
        paused_since=pause.since,
        paused_by=pause.by,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/version", summary="The server's version")
async def version() -> VersionOut:
    return VersionOut(version=__version__, api=API_VERSION)


@router.get(
    "/status",
    responses={401: {"model": ErrorOut, "description": "No or a wrong API token."}},
    summary="Queue depth per status, live workers, sandbox, endpoints, recent failures",
)
async def status(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """What ``telecoder status`` shows: sessions per status, the live workers, the sandbox on
    the server's host, the model endpoints, and the last failed sessions with their reason
    (a member's own only)."""
    user = roles.list_owner(principal)
    found = await opsstatus.snapshot(state.store, state.settings, user=user)
    return {"version": __version__, **found}
