"""The memories of a remote worker's attempts (``remote_state`` is the client side): a session
run on another host is given the memories a local worker would give it, and what it taught is
stored here, once.

- ``POST /api/workers/{session_id}/memories/recall``: the memories of the session's repository
  and of its chat user most relevant to ``query``, ``k`` each, recalled here with the server's
  embedder (``remembering.recall_for``); fenced on the lease (the attempt runs).
- ``POST /api/workers/{session_id}/memories``: the ended session's summary, stored under its
  repository as the server names it (masked again with the server's secrets, embedded here).
  Fenced on the lease being the session's last attempt, of this worker, and the session ended
  as one that teaches something (succeeded, failed, dead): the summary is written after the
  attempt's ``finish``. Stored once per session: a resend answers the memory stored first.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field

from telecoder import memory
from telecoder.domain import MemoryKind
from telecoder.embedders import build_embedder
from telecoder.errors import LeaseLost
from telecoder.masking import Masker
from telecoder.remembering import ENDED, recall_for, user_of
from telecoder.server.deps import PrincipalDep, SettingsDep, StoreDep
from telecoder.server.routes.memories import MemoryOut
from telecoder.server.routes.remote_workers import _ERRORS, LeaseIn, _as
from telecoder.server.schemas import Text, _In, _not_blank
from telecoder.store import Store
from telecoder.store.memories import MAX_TEXT

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/workers", tags=["remote workers"])

MAX_QUERY = 200_000
MAX_K = 50
MAX_FILES = 1000


class RecallIn(_In):
    lease: LeaseIn
    query: Text = Field(max_length=MAX_QUERY, description="What to rank by (the task).")
    k: int = Field(
        ge=1, le=MAX_K, description="How many of each scope (at most the server's memory_top_k)."
    )


class RecalledOut(BaseModel):
    memory: MemoryOut
    score: float = Field(description="The fused rank (higher is better).")
    similarity: float | None = Field(description="Cosine to the query, when both have vectors.")


class RecallOut(BaseModel):
    repo: list[RecalledOut] = Field(description="Of the session's repository, best first.")
    user: list[RecalledOut] = Field(description="Of the chat user who started it.")


class LearnedIn(_In):
    """An ended session's summary (``remembering.summary``), masked by the worker."""

    lease: LeaseIn
    text: Annotated[Text, AfterValidator(_not_blank)] = Field(max_length=MAX_TEXT)
    prompt: Text | None = Field(default=None, max_length=MAX_TEXT)
    outcome: Text | None = Field(default=None, max_length=1000)
    files: list[Annotated[Text, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=MAX_FILES
    )


def _recalled(found: list[memory.Recalled]) -> list[RecalledOut]:
    return [
        RecalledOut(
            memory=MemoryOut.model_validate(r.memory.to_dict()),
            score=r.score,
            similarity=r.similarity,
        )
        for r in found
    ]


async def _backfill(
    store: Store, embedder: memory.Embedder, *, repo: str | None = None, user: str | None = None
) -> None:
    try:
        await memory.backfill(store, embedder, repo=repo, user=user)
    except Exception as e:  # the vectors wait for the next recall
        log.warning("memory: no vectors backfilled (%s)", type(e).__name__)


@router.post(
    "/{session_id}/memories/recall",
    responses=_ERRORS,
    summary="The memories a running attempt is given (fenced)",
)
async def recall(
    session_id: str,
    body: RecallIn,
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> RecallOut:
    _as(principal, body.lease.worker_id)
    session = await store.queue.hold(body.lease.of(session_id))
    if not settings.memory:  # the server's setting rules, not the host's
        return RecallOut(repo=[], user=[])
    k = min(body.k, settings.memory_top_k)
    embedder = build_embedder(settings)
    found, facts = await recall_for(store, session, body.query, embedder=embedder, k=k)
    if embedder is not None:  # as a local worker does: vectors for what has none yet
        await _backfill(store, embedder, repo=session.repo)
        user = user_of(session)
        if user is not None:
            await _backfill(store, embedder, user=user)
    return RecallOut(repo=_recalled(found), user=_recalled(facts))


@router.post(
    "/{session_id}/memories",
    responses=_ERRORS,
    summary="Store what an ended session taught, once (fenced on its last attempt)",
)
async def remember(
    session_id: str,
    body: LearnedIn,
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> MemoryOut:
    _as(principal, body.lease.worker_id)
    lease = body.lease.of(session_id)
    session = await store.sessions.get(session_id)
    attempts = await store.sessions.attempts(session_id)
    last = attempts[-1] if attempts else None
    if (
        last is None
        or session.attempt != lease.attempt
        or last.number != lease.attempt
        or last.worker_id != lease.worker_id
        or session.status not in ENDED
    ):
        raise LeaseLost(f"session {session_id} attempt {lease.attempt} did not end it")
    stored = await memory.remember(
        store,
        text=body.text,
        masker=Masker.from_settings(settings),
        embedder=build_embedder(settings),
        repo=session.repo,
        kind=MemoryKind.SESSION,
        prompt=body.prompt,
        outcome=body.outcome,
        files=body.files,
        session_id=session_id,
    )
    return MemoryOut.model_validate(stored.to_dict())
