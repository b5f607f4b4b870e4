"""A remote worker's chats: the next turn runs where the workspace is kept.

A chat keeps its worktree and its agent's own session between turns on the host that ran its
last turn (``chat``). A ``telecoder worker --server`` host keeps them, and the chat's rows in
its scratch store (the turns before, with the worktree's path and the agent session), while
the chat waits for a message; so it does for a task that stopped blocked (it asked a
question, or reached its budget) until it is answered or its budget raised. The design is
affinity, not rebuilding: a worktree is cheap to make again from the pushed branch, but the
agent's own session (what it was told and did) is in its engine home on this host and nowhere
else.

- The server gives such a session's next turn only to the worker that ran its last one, while that
  worker lives (``store.affinity``); a claim says which attempt the turn continues
  (``continues``) and carries the messages it answers.
- Here, ``adopt`` puts the claim in the scratch store: a chat whose rows are kept here is taken
  up again with its messages added (its last turn's worktree and agent session are reopened by
  the pipeline as a local worker's are); any other claimed session replaces what the scratch
  store held of it. The waiting sessions' rows are kept across other claims.
- A turn that continues one this host does not hold (its worker died and another took it
  up, or this host lost its home): ``elsewhere`` names why, and the worker ends the turn
  ``failed`` at once, as a local worker does when the worktree is gone.

- A session the server ended while it waited here (a chat idle past ``chat_idle_seconds``,
  a cancel), or that another worker took up: ``tidy`` asks the server now and then which of
  the kept ones are gone, ends their scratch copies and sweeps what they left on this host
  (worktree, engine home), as a local worker's sweep does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

from telecoder.domain import (
    EventKind,
    FailureKind,
    NewEvent,
    NewSession,
    Session,
    SessionStatus,
)
from telecoder.errors import Conflict, ServerUnavailable
from telecoder.store import Claimed, Outcome, Store
from telecoder.worker import Runner
from telecoder.workerclient import WorkerClient, run_of

log = logging.getLogger(__name__)

MAX_KEPT = 1000  # chats waiting here, at most, looked at per claim


async def waiting(scratch: Store) -> list[str]:
    """The sessions whose workspaces this host keeps: waiting (``blocked``) in the scratch
    store (a chat between turns, a task that asked or reached its budget)."""
    page = await scratch.sessions.list(status=SessionStatus.BLOCKED, limit=MAX_KEPT)
    return [s.id for s in page.sessions]


def messages_of(got: dict[str, Any]) -> list[NewEvent]:
    """The messages the claimed turn answers, as the server has them."""
    found = got.get("messages") or []
    return [
        NewEvent(kind=EventKind(m["kind"]), data=dict(m["data"]), ts=float(m["ts"]))
        for m in found
        if m.get("kind") == EventKind.MESSAGE.value
    ]


async def adopt(
    scratch: Store, got: dict[str, Any], new: NewSession, running: Collection[str]
) -> tuple[Claimed, bool]:
    """The claim (``got``: the server's answer; ``new``: its session) in the scratch store,
    keeping the sessions ``running`` here and the chats waiting here; and whether its turn
    must end at once: it continues a workspace this host does not keep."""
    lease = got["lease"]
    kept = await waiting(scratch)
    here = new.id in kept
    others = [sid for sid in {*running, *kept} if sid != new.id]
    claimed = await scratch.queue.adopt(
        new,
        attempt=int(lease["attempt"]),
        worker_id=lease["worker_id"],
        keep=[*others, new.id] if here else others,
        run=run_of(got.get("run")),
        messages=messages_of(got),
    )
    return claimed, got.get("continues") is not None and not here


def elsewhere(session: Session) -> Outcome:
    """The end of a turn whose workspace is not on this host."""
    return Outcome(
        status=SessionStatus.FAILED,
        failure_kind=FailureKind.BAD_INPUT,
        error=(
            f"the {session.mode.value}'s worktree (attempt {session.attempt - 1} or before) is "
            "not on this host but where its last turn ran (a worker now gone, or one on the "
            "database): the conversation cannot continue"
        ),
        retryable=False,
    )


async def tidy(scratch: Store, api: WorkerClient, worker_id: str, pipeline: Runner) -> list[str]:
    """End the scratch copies of the kept sessions the server says are gone, and sweep what
    they left here; their ids."""
    kept = await waiting(scratch)
    if not kept:
        return []
    gone = await api.gone(worker_id, kept)
    for session_id in gone:
        with contextlib.suppress(Conflict):  # ended here meanwhile
            await scratch.sessions.cancel(session_id)
        log.info(
            "worker %s: %s ended on the server: its workspace here goes", worker_id, session_id
        )
    if gone:
        await pipeline.sweep()
    return gone


async def keep_tidy(
    scratch: Store,
    api: WorkerClient,
    worker_id: str,
    pipeline: Runner,
    period: float,
    halt: asyncio.Event,
) -> None:
    """``tidy`` every ``period`` seconds until ``halt``; a round that fails is logged."""
    while not halt.is_set():
        try:
            await tidy(scratch, api, worker_id, pipeline)
        except ServerUnavailable as e:
            log.warning("worker %s: kept workspaces not checked: %s", worker_id, e)
        except Exception:
            log.warning("worker %s: kept workspaces not checked", worker_id, exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), period)
