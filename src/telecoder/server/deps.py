"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from telecoder.bus import Bus
from telecoder.server.auth import CSRF_FIELD, CSRF_HEADER, SAFE_METHODS, AuthError, Principal
from telecoder.server.state import ServerState
from telecoder.settings import Settings
from telecoder.store import Store


async def get_state(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.telecoder)


StateDep = Annotated[ServerState, Depends(get_state)]


async def _store(state: StateDep) -> Store:
    return state.store


async def _settings(state: StateDep) -> Settings:
    return state.settings


async def _bus(state: StateDep) -> Bus:
    return state.bus


StoreDep = Annotated[Store, Depends(_store)]
SettingsDep = Annotated[Settings, Depends(_settings)]
BusDep = Annotated[Bus, Depends(_bus)]

# Declared so /docs offers "Authorize"; the check itself is Guard.identify's.
_bearer = HTTPBearer(auto_error=False, description="An API token (TELECODER_API_TOKEN).")


async def api_principal(
    request: Request,
    state: StateDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of an API route; 401 without credentials, 403 for a refused request."""
    state.guard.screen(request)
    principal = state.guard.identify(request)
    if principal is None:
        raise AuthError(401, "authentication required: send Authorization: Bearer <token>")
    if principal.via == "cookie" and request.method not in SAFE_METHODS:
        state.guard.check_csrf(principal, request.headers.get(CSRF_HEADER))
    return principal


PrincipalDep = Annotated[Principal, Depends(api_principal)]


async def limit_writes(request: Request, state: StateDep, principal: PrincipalDep) -> None:
    """One write for the caller's rate limit (429 with Retry-After when spent)."""
    state.limiter.hit(principal.rate_key)


class LoginRequired(Exception):
    """A dashboard page asked for without a login: the handler redirects to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


async def page_principal(request: Request, state: StateDep) -> Principal:
    """The viewer of a dashboard page; unsafe requests must carry the page's CSRF token."""
    state.guard.screen(request)
    principal = state.guard.identify(request)
    if principal is None:
        raise LoginRequired(request.url.path)
    if request.method not in SAFE_METHODS:
        supplied = request.headers.get(CSRF_HEADER)
        if supplied is None and "form" in request.headers.get("content-type", ""):
            value = (await request.form()).get(CSRF_FIELD)
            supplied = value if isinstance(value, str) else None
        state.guard.check_csrf(principal, supplied)
        state.limiter.hit(principal.rate_key)
    return principal


ViewerDep = Annotated[Principal, Depends(page_principal)]
