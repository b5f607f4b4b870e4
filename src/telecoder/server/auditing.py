"""The audit log of the HTTP surface: an ASGI middleware that writes one row for every unsafe
request (POST, PUT, PATCH, DELETE) that succeeded or was refused — a 403, or a member's 404 for
someone else's session — API calls, dashboard forms, webhooks alike, so no route has to
remember to.

Who: the principal the route's dependency identified (``deps.PRINCIPAL_KEY`` in the request's
scope), else ``anonymous`` (a webhook, a login, a request refused before it was identified).
What: the method and the route's path template (``POST /api/sessions/{session_id}/cancel``).
Target: the path asked for. From where: the client's address and user agent. The row is
written before the response starts, so a client that got its answer finds its row.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telecoder.server.auth import SAFE_METHODS
from telecoder.server.deps import PRINCIPAL_KEY, REFUSED_KEY
from telecoder.store import Store

log = logging.getLogger(__name__)

# Not audited themselves: /mcp's tools call the API in-process, where each change is audited.
UNAUDITED = frozenset({"/mcp"})
# A remote worker's polling and streaming (claims, heartbeats, events): not changes of anyone's
# making; its register and finish calls are audited.
WORKER_TRAFFIC = frozenset({"/api/workers/claim", "/api/workers/renew"})


def unaudited(path: str) -> bool:
    return (
        path in UNAUDITED
        or path in WORKER_TRAFFIC
        or (path.startswith("/api/workers/") and path.endswith("/events"))
    )


def audited(method: str, status: int) -> bool:
    return method not in SAFE_METHODS and (status < 400 or status == 403)


class AuditLog:
    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or unaudited(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start" and (
                audited(scope["method"], message["status"]) or scope.get(REFUSED_KEY)
            ):
                await self._record(scope, message["status"])
            await send(message)

        await self.app(scope, receive, recording)

    async def _record(self, scope: Scope, status: int) -> None:
        principal = scope.get(PRINCIPAL_KEY)
        route = scope.get("route")
        template = getattr(route, "path", None) or scope["path"]
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        detail: dict[str, Any] = {"status": status}
        if scope.get(REFUSED_KEY):
            detail["refused"] = "not their session"
        if scope.get("query_string"):
            detail["query"] = scope["query_string"].decode("latin-1")[:1000]
        if principal is not None:
            detail["via"] = principal.via
        try:
            await self.store.audit.record(
                actor=principal.name if principal is not None else "anonymous",
                role=principal.role if principal is not None else "-",
                action=f"{scope['method']} {template}",
                target=scope["path"],
                detail=detail,
                source=client[0] if client else "?",
                user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:500] or None,
            )
        except Exception:  # the audit must not take the request down with it
            log.exception("could not write the audit row of %s %s", scope["method"], scope["path"])
