"""``GET /metrics``: Prometheus's text format (``telecoder.metrics``).

Auth: the API's (a bearer API token; an open server — no token, loopback only — is open), or
``TELECODER_METRICS_TOKEN`` as a bearer token, for a scraper that should hold nothing else.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from telecoder import metrics
from telecoder.server import roles
from telecoder.server.auth import AuthError
from telecoder.server.deps import StateDep

router = APIRouter(tags=["meta"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: queue, sessions, costs, tokens, workers, gateway, deliveries",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}}, 401: {"description": "No token."}},
)
async def prometheus(request: Request, state: StateDep) -> Response:
    await state.guard.screen(request)
    scraper = state.settings.metrics_token
    header = request.headers.get("authorization", "")
    allowed = scraper is not None and hmac.compare_digest(
        header.encode(), f"Bearer {scraper.get_secret_value()}".encode()
    )
    if not allowed:
        principal = await state.guard.identify(request)
        if principal is None:
            raise AuthError(401, "authentication required: send Authorization: Bearer <token>")
        roles.check(principal, request.method, request.url.path)
    found = await metrics.collect(state.store, state.settings)
    return Response(metrics.render(found), media_type=metrics.CONTENT_TYPE)
