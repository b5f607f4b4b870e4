"""``/api/audit`` and the dashboard's ``/audit`` page: the audit log, for admins only (the
check is ``roles.ADMIN_PREFIXES``, applied by the principal's dependency)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, ViewerDep
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ErrorOut, Text

router = APIRouter(prefix="/api/audit", tags=["audit"])
pages = APIRouter(include_in_schema=False)

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    403: {"model": ErrorOut, "description": "Not an admin."},
}


@router.get("", responses=_ERRORS, summary="The audit log, newest first (admins only)")
async def list_audit(
    store: StoreDep,
    _: PrincipalDep,
    actor: Annotated[Text | None, Query(max_length=255)] = None,
    since: Annotated[float | None, Query(ge=0, description="Seconds since the epoch.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    rows = await store.audit.list(actor=actor, since=since, limit=limit)
    return [r.to_dict() for r in rows]


@pages.get("/audit")
async def audit_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    rows = await state.store.audit.list(limit=500)
    shown = [
        {**r.to_dict(), "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.ts))} for r in rows
    ]
    return render(request, state, viewer, "audit.html", {"rows": shown})
