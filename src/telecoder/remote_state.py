"""What a remote attempt reads and writes of the server's state beyond its own session: the
memories of its repository and user, and what its session's earlier attempts spent.

A worker on another host (``remote_worker``) runs the pipeline against a scratch store that
holds the claimed session only; left alone, a remote session would recall no memory, what it
learnt would stay on the host, and its budget would count from zero on every attempt. So:

- **Recall** (``ServerRecall``, the pipeline's ``Remembering.recall``): the server recalls for
  the attempt (``POST /api/workers/{id}/memories/recall``, fenced on the lease) from its own
  store, with its embedder, in the session's repository and for its chat user as it names them:
  the memories a local worker would be given, the same ids, in the same order.
- **Remember** (``ServerMemories``, the scratch store's ``memories``): the summary of an ended
  session (masked on this host with the attempt's masker) goes to the server (``POST
  /api/workers/{id}/memories``, fenced on the session's last attempt being this one, ended), which
  stores it under the session's repository as the server names it, masks it again with its own
  secrets and embeds it. Stored once per session there: a call sent again after one went
  unanswered stores nothing twice. The host keeps no copy and loads no embedding model.
- **Spend** (``carry_spend``): the claim's session carries its totals so far (the spend of its
  earlier attempts, wherever they ran); the scratch copy starts from them, so the gateway's budget
  check and the stop on a spent budget count them, as on a local worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from telecoder import memory
from telecoder.domain import Lease, Memory, MemoryKind, Session
from telecoder.errors import ServerUnavailable
from telecoder.remembering import Remembering
from telecoder.store import Claimed, Store
from telecoder.store.memories import Memories
from telecoder.workerclient import WorkerClient

log = logging.getLogger(__name__)

MAX_QUERY = 200_000  # characters of a recall's query sent (the route takes no more)
TRIES = 4  # calls tried while the server cannot be reached (a memory is a bonus)


def attach(remembering: Remembering, store: Store, api: WorkerClient) -> None:
    """Make the pipeline's memory the server's (see the module)."""
    remembering.recall = ServerRecall(api)
    remembering.one_shot = True  # the server embeds what it stores: no model loaded here
    store.memories = ServerMemories(store, api)


async def carry_spend(scratch: Store, claimed: Claimed, server: Session) -> Claimed:
    """The adopted session with the totals the server has for it (its earlier attempts')."""
    await scratch.usage.carry(
        server.id,
        cost_usd=server.cost_usd,
        input_tokens=server.input_tokens,
        output_tokens=server.output_tokens,
    )
    return replace(claimed, session=await scratch.sessions.get(server.id))


async def _tried(what: str, call: Any) -> Any:
    """``await call()``, again with a growing pause while the server cannot be reached."""
    delay = 0.5
    for attempt in range(TRIES):
        try:
            return await call()
        except ServerUnavailable as e:
            if attempt == TRIES - 1:
                raise
            log.warning("%s: the server waits: %s", what, e)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class ServerRecall:
    """``Remembering.recall`` of a remote worker: the server's memories for the attempt."""

    def __init__(self, api: WorkerClient) -> None:
        self.api = api

    async def __call__(
        self, session: Session, query: str, k: int
    ) -> tuple[list[memory.Recalled], list[memory.Recalled]]:
        lease = Lease(
            session_id=session.id, attempt=session.attempt, worker_id=session.worker_id or ""
        )
        got = await _tried(
            f"session {session.id}: recall",
            lambda: self.api.recall(lease, query[:MAX_QUERY], k),
        )
        return _recalled(got.get("repo") or ()), _recalled(got.get("user") or ())


class ServerMemories(Memories):
    """The scratch store's memories, whose sessions' summaries are stored on the server."""

    def __init__(self, store: Store, api: WorkerClient) -> None:
        super().__init__(store.db)
        self._store = store
        self.api = api

    async def add(
        self,
        *,
        text: str,
        repo: str | None = None,
        user: str | None = None,
        kind: MemoryKind = MemoryKind.NOTE,
        prompt: str | None = None,
        outcome: str | None = None,
        files: Sequence[str] = (),
        session_id: str | None = None,
        embedding: bytes | None = None,
        embedder: str | None = None,
    ) -> Memory:
        if session_id is None:  # nothing of a session: not the server's (none is made here)
            return await super().add(
                text=text,
                repo=repo,
                user=user,
                kind=kind,
                prompt=prompt,
                outcome=outcome,
                files=files,
                embedding=embedding,
                embedder=embedder,
            )
        attempts = await self._store.sessions.attempts(session_id)
        last = attempts[-1]  # the attempt that ended it (the scratch store has no other)
        lease = Lease(session_id=session_id, attempt=last.number, worker_id=last.worker_id)
        sent = {"text": text, "prompt": prompt, "outcome": outcome, "files": list(files)}
        got = await _tried(
            f"session {session_id}: remember", lambda: self.api.remember(lease, sent)
        )
        return memory_of(got)


def memory_of(data: dict[str, Any]) -> Memory:
    """A memory as the API gives it (``MemoryOut``)."""
    return Memory(
        id=int(data["id"]),
        repo=data.get("repo"),
        user=data.get("user"),
        kind=MemoryKind(data["kind"]),
        text=str(data["text"]),
        prompt=data.get("prompt"),
        outcome=data.get("outcome"),
        files=tuple(data.get("files") or ()),
        session_id=data.get("session_id"),
        embedder=data.get("embedder"),
        created_at=datetime.fromisoformat(str(data["created_at"])).timestamp(),
    )


def _recalled(found: Any) -> list[memory.Recalled]:
    return [
        memory.Recalled(
            memory=memory_of(r["memory"]),
            score=float(r["score"]),
            similarity=None if r.get("similarity") is None else float(r["similarity"]),
        )
        for r in found
    ]
