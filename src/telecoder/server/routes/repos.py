"""``/api/repos``: the repository registry and the channels' routes to it, as ``telecoder repos``;
and the dashboard's ``/repos`` page (read-only).

A local path is checked on the server's machine.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, Field

from telecoder import registry
from telecoder.errors import RegisteredRepoNotFound
from telecoder.repo_registry import CHANNELS, check_channel, check_place, checked_repo
from telecoder.server.deps import (
    PrincipalDep,
    SettingsDep,
    StateDep,
    StoreDep,
    ViewerDep,
    limit_writes,
)
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ENGINE_NAME, ErrorOut, Text, _In
from telecoder.store import Store
from telecoder.store.repos import NAME

router = APIRouter(prefix="/api/repos", tags=["repos"])
pages = APIRouter(include_in_schema=False)

RepoName = Annotated[str, Path(description="The repository's registered name.")]
ChannelName = Annotated[str, Path(description=f"The channel: {', '.join(CHANNELS)}.")]
Place = Annotated[
    str,
    Path(
        max_length=128,
        description="A Slack channel id, a Telegram chat id, a Linear team key, a Jira "
        "project key, or * for all of the channel's places.",
    ),
]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No repository (or route) of that name."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


class RepoCreate(_In):
    """A repository to register (or what an existing name names, changed)."""

    name: str = Field(pattern=NAME.pattern, description="Its short name, e.g. app.")
    url: Text = Field(max_length=2048, description="A URL, owner/name, or a path on the server.")
    engine: str | None = Field(default=None, pattern=ENGINE_NAME, description="Its engine.")
    priority: int = Field(default=0, description="Its sessions' queue priority.")


class RepoOut(BaseModel):
    name: str
    url: str
    engine: str | None
    priority: int


class RouteIn(_In):
    repo: str = Field(pattern=NAME.pattern, description="The registered repository.")


class RouteOut(BaseModel):
    channel: str
    place: str
    repo: str


class ReposOut(BaseModel):
    """The shape of ``telecoder repos list --json``."""

    repos: list[RepoOut] = Field(description="Highest priority first, then by name.")
    routes: list[RouteOut]


async def _listing(store: Store) -> ReposOut:
    repos = [RepoOut(**r.to_dict()) for r in await store.repos.list()]
    routes = [RouteOut(**r.to_dict()) for r in await store.repos.routes()]
    return ReposOut(repos=repos, routes=routes)


@router.get("", responses=_ERRORS, summary="Registered repositories and the routes to them")
async def list_repos(store: StoreDep, _: PrincipalDep) -> ReposOut:
    return await _listing(store)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Register a repository (or change what its name names)",
)
async def add_repo(
    body: RepoCreate, store: StoreDep, settings: SettingsDep, _: PrincipalDep
) -> RepoOut:
    spec = await checked_repo(
        body.name,
        body.url,
        engine=body.engine,
        priority=body.priority,
        engines=registry.names("engines"),
        settings=settings,
    )
    repo = await store.repos.add(spec.name, spec.url, engine=spec.engine, priority=spec.priority)
    return RepoOut(**repo.to_dict())


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Unregister a repository and the routes to it",
)
async def remove_repo(name: RepoName, store: StoreDep, _: PrincipalDep) -> Response:
    await store.repos.remove(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/routes/{channel}/{place}", responses=_ERRORS, summary="The default repository of a place"
)
async def get_route(
    channel: ChannelName, place: Place, store: StoreDep, _: PrincipalDep
) -> RouteOut:
    check_channel(channel)
    check_place(place)
    found = [r for r in await store.repos.routes() if (r.channel, r.place) == (channel, place)]
    if not found:
        raise RegisteredRepoNotFound(f"no route for {channel} {place}")
    return RouteOut(**found[0].to_dict())


@router.put(
    "/routes/{channel}/{place}",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Make a repository the default of a channel's place",
)
async def put_route(
    channel: ChannelName, place: Place, body: RouteIn, store: StoreDep, _: PrincipalDep
) -> RouteOut:
    check_channel(channel)
    check_place(place)
    route = await store.repos.route(channel, place, body.repo)
    return RouteOut(**route.to_dict())


@router.delete(
    "/routes/{channel}/{place}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Remove a place's default repository",
)
async def delete_route(
    channel: ChannelName, place: Place, store: StoreDep, _: PrincipalDep
) -> Response:
    check_channel(channel)
    check_place(place)
    if not await store.repos.unroute(channel, place):
        raise RegisteredRepoNotFound(f"no route for {channel} {place}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- the dashboard's page ---


@pages.get("/repos")
async def repos_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    listing = await _listing(state.store)
    return render(request, state, viewer, "repos.html", listing.model_dump())
