"""``/api/memories``: what finished sessions taught, as ``telecoder memory … --server URL``
speaks it; and the dashboard's ``/memories`` page.

A ``repo`` sent here is resolved on the server's machine as sessions resolve it (a path, a URL,
``owner/name``, a registered name: ``memory_scope``). Memories are the JSON of ``telecoder memory
show ID --json``. Added memories go through ``memory.remember``: masked, and embedded when an
embedder is configured.

    404  no memory of that id            422  invalid input (a repository that names nothing)
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import AfterValidator, BaseModel, Field

from telecoder import memory
from telecoder.domain import Memory, MemoryKind
from telecoder.embedders import build_embedder
from telecoder.masking import Masker
from telecoder.memory_scope import MAX_REPO, MAX_USER, repo_key
from telecoder.server.deps import (
    PrincipalDep,
    SettingsDep,
    StateDep,
    StoreDep,
    ViewerDep,
    limit_writes,
)
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import MAX_SEQ, ErrorOut, Text, _In, _not_blank
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.store.memories import MAX_LIST, MAX_TEXT

router = APIRouter(prefix="/api/memories", tags=["memories"])
pages = APIRouter(include_in_schema=False)

PAGE = 100  # memories on one dashboard page

MemoryId = Annotated[int, Path(ge=1, le=MAX_SEQ, description="The memory's id.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No memory of that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


class MemoryCreate(_In):
    """A memory added by hand: of a repository, a user, or a user in a repository."""

    repo: Text | None = Field(
        default=None,
        max_length=MAX_REPO,
        description="A URL, owner/name, a registered name, or a path on the server.",
    )
    user: Annotated[Text, AfterValidator(_not_blank)] | None = Field(
        default=None, max_length=MAX_USER, description="A user (channel:id, e.g. telegram:42)."
    )
    text: Annotated[Text, AfterValidator(_not_blank)] = Field(max_length=MAX_TEXT)
    kind: Literal["note", "lesson", "fact"] = Field(default="note", description="What it is.")


class MemoryOut(BaseModel):
    """The shape of ``telecoder memory show ID --json``."""

    id: int
    repo: str | None = Field(description="The repository, as its sessions name it.")
    user: str | None
    kind: MemoryKind
    text: str
    prompt: str | None = Field(description="The session's task, for a session's summary.")
    outcome: str | None = Field(description="How that session ended.")
    files: list[str] = Field(description="The files it touched.")
    session_id: str | None
    embedder: str | None = Field(description="The model its vector came from (none: words only).")
    created_at: str


class MemoryRepoOut(BaseModel):
    repo: str
    memories: int = Field(description="How many memories it has.")


class MemoryUserOut(BaseModel):
    user: str
    memories: int = Field(description="How many memories name them.")


def _out(found: Memory) -> MemoryOut:
    return MemoryOut.model_validate(found.to_dict())


async def _key(repo: str | None, store: Store, settings: Settings) -> str | None:
    return None if repo is None else await repo_key(repo, store=store, settings=settings)


# --- routes -----------------------------------------------------------------------------------


@router.get("", responses=_ERRORS, summary="Memories of a repository or a user, newest first")
async def list_memories(
    store: StoreDep,
    settings: SettingsDep,
    _: PrincipalDep,
    repo: Annotated[
        Text | None, Query(max_length=MAX_REPO, description="The repository (resolved here).")
    ] = None,
    user: Annotated[Text | None, Query(max_length=MAX_USER)] = None,
    kind: Annotated[MemoryKind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="Ids below it.")] = None,
) -> list[MemoryOut]:
    """Without ``repo`` or ``user``: everyone's (the operator's view)."""
    key = await _key(repo, store, settings)
    found = await store.memories.list(repo=key, user=user, kind=kind, limit=limit, before=before)
    return [_out(m) for m in found]


@router.get("/repos", responses=_ERRORS, summary="The repositories that have memories")
async def memory_repos(store: StoreDep, _: PrincipalDep) -> list[MemoryRepoOut]:
    return [MemoryRepoOut(repo=r, memories=n) for r, n in await store.memories.repos()]


@router.get("/users", responses=_ERRORS, summary="The users who have memories")
async def memory_users(store: StoreDep, _: PrincipalDep) -> list[MemoryUserOut]:
    return [MemoryUserOut(user=u, memories=n) for u, n in await store.memories.users()]


@router.get("/{memory_id}", responses=_ERRORS, summary="One memory")
async def get_memory(memory_id: MemoryId, store: StoreDep, _: PrincipalDep) -> MemoryOut:
    return _out(await store.memories.get(memory_id))


@router.delete(
    "/{memory_id}",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Forget a memory (returns what it was)",
)
async def forget_memory(memory_id: MemoryId, store: StoreDep, _: PrincipalDep) -> MemoryOut:
    return _out(await store.memories.forget(memory_id))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Remember something (masked, embedded)",
)
async def add_memory(
    body: MemoryCreate, store: StoreDep, settings: SettingsDep, _: PrincipalDep
) -> MemoryOut:
    added = await memory.remember(
        store,
        text=body.text,
        masker=Masker.from_settings(settings),
        embedder=build_embedder(settings),
        repo=await _key(body.repo, store, settings),
        user=body.user,
        kind=MemoryKind(body.kind),
    )
    return _out(added)


# --- the dashboard's page ---------------------------------------------------------------------


@pages.get("/memories")
async def memories_page(
    request: Request,
    state: StateDep,
    viewer: ViewerDep,
    repo: Annotated[str | None, Query(max_length=MAX_REPO)] = None,
    user: Annotated[str | None, Query(max_length=MAX_USER)] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> Response:
    """The repositories and users with memories; with ``repo`` (exactly as stored) or ``user``,
    their memories."""
    memories = state.store.memories
    found = []
    if repo is not None:
        found = await memories.list(repo=repo, limit=PAGE, before=before)
    elif user is not None:
        found = await memories.list(user=user, limit=PAGE, before=before)
    context = {
        "repos": await memories.repos(),
        "users": await memories.users(),
        "repo": repo,
        "user": None if repo is not None else user,
        "memories": [m.to_dict() for m in found],
        "older": found[-1].id if len(found) == PAGE else None,
    }
    return render(request, state, viewer, "memories.html", context)


@pages.delete("/memories/{memory_id}")
async def forget_row(memory_id: MemoryId, state: StateDep, _: ViewerDep) -> Response:
    """htmx: forget it; the empty answer replaces its row."""
    await state.store.memories.forget(memory_id)
    return Response("", media_type="text/html")


@pages.post("/memories/{memory_id}/forget")
async def forget_form(memory_id: MemoryId, state: StateDep, _: ViewerDep) -> Response:
    """The same without JavaScript: a form's POST, answered with the page it was on."""
    gone = await state.store.memories.forget(memory_id)
    where = "/memories"
    if gone.repo is not None:
        where += "?" + urlencode({"repo": gone.repo})
    elif gone.user is not None:
        where += "?" + urlencode({"user": gone.user})
    return RedirectResponse(where, status_code=303)
