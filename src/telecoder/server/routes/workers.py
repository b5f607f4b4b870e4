"""``/api/workers``: the worker processes sharing this database, as ``telecoder workers``;
``POST /api/workers/{id}/drain`` and ``/resume`` (admins): a drained worker finishes what it runs
and claims nothing new, within a heartbeat; the dashboard's ``/workers`` page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, ViewerDep, limit_writes
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ErrorOut, WorkerOut

router = APIRouter(prefix="/api/workers", tags=["workers"])
pages = APIRouter(include_in_schema=False)

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    403: {"model": ErrorOut, "description": "Admins only."},
    404: {"model": ErrorOut, "description": "No worker has that id."},
}


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


@router.post(
    "/{worker_id}/drain",
    responses=_ERRORS,
    dependencies=[Depends(limit_writes)],
    summary="Drain a worker: it finishes its running sessions and claims nothing new",
)
async def drain_worker(worker_id: str, store: StoreDep, _: PrincipalDep) -> WorkerOut:
    """Idempotent. The worker obeys within a heartbeat; the flag stays until ``resume``, across
    the worker's restarts."""
    return WorkerOut.of(await store.workers.set_drain(worker_id, True))


@router.post(
    "/{worker_id}/resume",
    responses=_ERRORS,
    dependencies=[Depends(limit_writes)],
    summary="Resume a drained worker: it claims sessions again",
)
async def resume_worker(worker_id: str, store: StoreDep, _: PrincipalDep) -> WorkerOut:
    return WorkerOut.of(await store.workers.set_drain(worker_id, False))


# --- the dashboard's page ---


@pages.get("/workers")
async def workers_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    found = await state.store.workers.list()
    return render(request, state, viewer, "workers.html", {"workers_list": found})


@pages.post("/workers/{worker_id}/drain")
async def drain_page(worker_id: str, state: StateDep, _: ViewerDep) -> Response:
    await state.store.workers.set_drain(worker_id, True)
    return RedirectResponse("/workers", status_code=303)


@pages.post("/workers/{worker_id}/resume")
async def resume_page(worker_id: str, state: StateDep, _: ViewerDep) -> Response:
    await state.store.workers.set_drain(worker_id, False)
    return RedirectResponse("/workers", status_code=303)
