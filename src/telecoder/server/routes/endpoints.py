"""``/api/endpoints``: the model endpoints the gateway forwards to, as ``telecoder endpoints``.

Checks run from the server, with the keys of its environment.
"""

from __future__ import annotations

import time
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Path, Request, Response, status

from telecoder.errors import BadInput, EndpointNotFound
from telecoder.gateway.endpoints import (
    ENV_NAMES,
    Endpoint,
    check_and_record,
    env_specs,
    find,
    listing,
    validate,
)
from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, ViewerDep, limit_writes
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ENDPOINT_NAME, EndpointCreate, EndpointOut, ErrorOut
from telecoder.store import EndpointRow

router = APIRouter(prefix="/api/endpoints", tags=["endpoints"])
pages = APIRouter(include_in_schema=False)

EndpointName = Annotated[str, Path(pattern=ENDPOINT_NAME, description="The endpoint's name.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No endpoint has that name."},
    422: {"model": ErrorOut, "description": "Invalid input; ``fields`` says which."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "An endpoint of that name exists."},
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


@router.get("", responses=_ERRORS, summary="Model endpoints: health, latency, models")
async def list_endpoints(store: StoreDep, _: PrincipalDep) -> list[EndpointOut]:
    return [EndpointOut(**e.to_dict()) for e in await listing(store, env_specs())]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Register a model endpoint",
)
async def add_endpoint(body: EndpointCreate, store: StoreDep, _: PrincipalDep) -> EndpointOut:
    spec = validate(body.name, body.url, body.kind, body.key_env)
    row = EndpointRow(name=spec.name, url=spec.url, kind=spec.kind, key_env=spec.key_env)
    await store.endpoints.add(row)
    return EndpointOut(**Endpoint(spec=spec, state=row).to_dict())


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Forget a registered endpoint",
)
async def remove_endpoint(name: EndpointName, store: StoreDep, _: PrincipalDep) -> Response:
    if name in ENV_NAMES:
        raise BadInput(f"{name!r} comes from the server's environment: unset its variables")
    if not await store.endpoints.remove(name):
        raise EndpointNotFound(f"no endpoint named {name!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/check",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Check an endpoint now (health, latency, models)",
)
async def check_endpoint(name: EndpointName, store: StoreDep, _: PrincipalDep) -> EndpointOut:
    env = env_specs()
    found = await find(store, env, name)
    if found is None:
        raise EndpointNotFound(f"no endpoint named {name!r}")
    async with httpx.AsyncClient() as client:
        await check_and_record(store, [found.spec], client=client)
    checked = await find(store, env, name)
    assert checked is not None
    return EndpointOut(**checked.to_dict())


# --- the dashboard's page ---


async def _context(state: StateDep) -> dict[str, object]:
    found = await listing(state.store, env_specs())
    return {"endpoints": [e.to_dict() for e in found], "now": time.time()}


@pages.get("/endpoints")
async def endpoints_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    return render(request, state, viewer, "endpoints.html", await _context(state))


@pages.get("/partials/endpoints")
async def endpoint_rows(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    return render(request, state, viewer, "_endpoints.html", await _context(state))
