"""The dashboard's sign-in: the login page, the login form (a token → a signed cookie), logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from telecoder.server.auth import COOKIE, COOKIE_SECONDS
from telecoder.server.deps import PRINCIPAL_KEY, StateDep, ViewerDep
from telecoder.server.routes.dashboard import render

router = APIRouter(include_in_schema=False)


def _safe_next(url: str | None) -> str:
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"


@router.get("/login")
async def login_page(request: Request, state: StateDep, next: str = "/") -> Response:
    if await state.guard.check_open():
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, state, None, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(
    request: Request,
    state: StateDep,
    token: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    await state.guard.screen(request)
    client = request.client.host if request.client else "?"
    state.login_limiter.hit(f"login@{client}")
    cookie = await state.guard.login(token.strip())
    if cookie is None:
        context = {"next": _safe_next(next), "error": "That token is not valid."}
        return render(request, state, None, "login.html", context, status_code=401)
    signed_in = await state.guard.read_cookie(cookie)
    if signed_in is not None:  # the audit row of the login names who signed in
        request.scope[PRINCIPAL_KEY] = signed_in
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(_: ViewerDep) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
