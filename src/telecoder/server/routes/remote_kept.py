"""``POST /api/workers/kept``: which of the workspaces a remote host keeps are no longer wanted.

A remote worker keeps a waiting session's worktree and agent session (a chat between turns, a
task that asked or reached its budget; ``remote_chats``). The server may end such a session
while it waits (idle past ``chat_idle_seconds``, cancelled), or another worker may have taken it
up after this one was gone: the host asks now and then and removes what is ``gone``, as a
local worker's sweep does (``cleanup``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from telecoder.server.deps import PrincipalDep, StoreDep
from telecoder.server.routes.remote_workers import _ERRORS, WorkerId, _as
from telecoder.server.schemas import SESSION_REF, ErrorOut, _In

router = APIRouter(prefix="/api/workers", tags=["remote workers"])

MAX_KEPT = 1000


class KeptIn(_In):
    worker_id: str = WorkerId
    sessions: list[Annotated[str, Field(pattern=SESSION_REF)]] = Field(
        max_length=MAX_KEPT, description="The sessions whose workspaces the host keeps."
    )


class KeptOut(BaseModel):
    gone: list[str] = Field(
        description="Of those, the ones it may remove: ended, unknown, or another worker's now."
    )


@router.post(
    "/kept",
    responses={
        **{k: v for k, v in _ERRORS.items() if k != 409},
        404: {"model": ErrorOut, "description": "No such worker (register first)."},
    },
    summary="Which of the workspaces a remote host keeps it may remove",
)
async def kept(body: KeptIn, store: StoreDep, principal: PrincipalDep) -> KeptOut:
    _as(principal, body.worker_id)
    await store.workers.get(body.worker_id)  # 404 unless registered
    return KeptOut(gone=await store.kept.gone(body.worker_id, body.sessions))
