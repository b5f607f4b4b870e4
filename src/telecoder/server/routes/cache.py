"""``/api/cache``: the setup cache of the server's host, as ``telecoder cache list``."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from telecoder.server.deps import PrincipalDep, SettingsDep
from telecoder.server.schemas import ErrorOut
from telecoder.setupcache import SetupCache

router = APIRouter(prefix="/api/cache", tags=["cache"])


class CacheEntryOut(BaseModel):
    key: str
    path: str
    size: int = Field(description="Bytes it takes on disk (du), its spare included.")
    files_size: int = Field(description="Bytes of its files: what a restore gives a worktree.")
    created: float
    used: float
    paths: list[str]
    repo: str
    commands: list[str]
    in_use: bool


@router.get(
    "",
    responses={401: {"model": ErrorOut, "description": "No or a wrong API token."}},
    summary="Setup cache entries on the server's host",
)
async def list_cache(settings: SettingsDep, _: PrincipalDep) -> list[CacheEntryOut]:
    """Most recently used first: the entries of ``$TELECODER_HOME/cache/setup`` on the host
    the server runs on (a worker on another host has its own)."""
    cache = SetupCache(settings.setup_cache_dir, settings.cache_max)
    return [CacheEntryOut.model_validate(e.to_dict()) for e in cache.entries()]
