"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, NoReturn, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from telecoder.bus import Bus
from telecoder.errors import GoalNotFound, SessionNotFound, TeleCoderError
from telecoder.server import roles
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
    """The caller of an API route; 401 without credentials, 403 for a refused request (its
    role may not, see ``roles``), 404 for a session that is not theirs."""
    await state.guard.screen(request)
    principal = await state.guard.identify(request)
    if principal is None:
        raise AuthError(401, "authentication required: send Authorization: Bearer <token>")
    request.scope[PRINCIPAL_KEY] = principal  # for the audit log
    if principal.via == "cookie" and request.method not in SAFE_METHODS:
        state.guard.check_csrf(principal, request.headers.get(CSRF_HEADER))
    await _allowed(request, state, principal)
    return principal


PRINCIPAL_KEY = "telecoder.principal"
REFUSED_KEY = "telecoder.refused"


async def _allowed(request: Request, state: ServerState, principal: Principal) -> None:
    roles.check(principal, request.method, request.url.path)
    if principal.role != "member":
        return
    params = request.path_params
    store = state.store
    if (session_id := params.get("session_id")) is not None:
        session = await store.sessions.resolve(session_id)
        if not roles.owns(principal, session.user):
            refuse(request, SessionNotFound(f"no session {session_id!r}"))
    if (run_id := params.get("run_id")) is not None:
        run = await store.runs.get(run_id)
        if not roles.owns(principal, run.user):
            refuse(request, SessionNotFound(f"no run {run_id!r}"))
    if (goal_id := params.get("goal_id")) is not None:
        goal = await store.goals.get(goal_id)
        if not roles.owns(principal, goal.user):
            refuse(request, GoalNotFound(f"no goal {goal_id!r}"))


def refuse(request: Request, error: TeleCoderError) -> NoReturn:
    """Someone else's session, run, goal or job: audited like a 403, answered like none."""
    request.scope[REFUSED_KEY] = True
    raise error


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
    await state.guard.screen(request)
    principal = await state.guard.identify(request)
    if principal is None:
        raise LoginRequired(request.url.path)
    request.scope[PRINCIPAL_KEY] = principal
    if request.method not in SAFE_METHODS:
        supplied = request.headers.get(CSRF_HEADER)
        if supplied is None and "form" in request.headers.get("content-type", ""):
            value = (await request.form()).get(CSRF_FIELD)
            supplied = value if isinstance(value, str) else None
        state.guard.check_csrf(principal, supplied)
        state.limiter.hit(principal.rate_key)
    await _allowed(request, state, principal)
    return principal


ViewerDep = Annotated[Principal, Depends(page_principal)]
