"""``/api/inbox``: the inbox over HTTP, as ``telecoder inbox … --server URL`` speaks it.

The caller names itself in the body (or the query) as ``agent``; the API token says it may use
the API at all. A member reads only their own messages (``Inbox``'s ``owner``: from, to or about
the agents of their sessions and runs; any other is ``404``); admins and viewers read all, and
the writes are for admins (``roles``). Messages are the JSON of ``telecoder inbox show ID
--json``. Waiting is a long-poll: ``wait`` seconds at most (``MAX_WAIT``), answered early when
something lands, with ``[]`` when nothing did; a client that wants longer asks again.

    404  no such message (or artifact)     409  ``conflict``: claimed by another, or ended
    422  invalid input                     409  ``lease_lost``: your claim expired or was taken
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from telecoder.domain import Message, MessageStatus
from telecoder.errors import BadInput, TimedOut
from telecoder.server import roles
from telecoder.server.deps import PrincipalDep, StoreDep, limit_writes
from telecoder.server.schemas import MAX_SEQ, ErrorOut, Text, _In
from telecoder.store import Store
from telecoder.store import inbox as inboxes

router = APIRouter(prefix="/api/inbox", tags=["inbox"])

MAX_WAIT = 25.0  # seconds one long-poll may wait (the CLI asks for 20)

MessageId = Annotated[int, Path(ge=1, le=MAX_SEQ, description="The message's id.")]
Agent = Annotated[Text, Field(min_length=1, max_length=inboxes.MAX_NAME, description="Who asks.")]
Name = Annotated[Text, Field(min_length=1, max_length=inboxes.MAX_NAME)]
Lease = Annotated[
    float, Field(gt=0, le=86_400, allow_inf_nan=False, description="Seconds to hold it.")
]
Wait = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT, allow_inf_nan=False, description="Seconds to wait for one (0: none)."),
]
Note = Annotated[Text | None, Field(max_length=inboxes.MAX_BODY)]

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No message of that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {
        "model": ErrorOut,
        "description": "``conflict``: another agent holds it, or it has ended; "
        "``lease_lost``: the caller's claim expired or was taken.",
    },
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


# --- shapes -----------------------------------------------------------------------------------


class ArtifactIn(_In):
    name: Name
    content_base64: str = Field(
        max_length=(inboxes.MAX_ARTIFACT * 4) // 3 + 4, description="The file, base64."
    )


class SendIn(_In):
    agent: Agent
    body: Text = Field(max_length=inboxes.MAX_BODY)
    to: Name | None = Field(default=None, description="The agent it is for.")
    thread: Name | None = Field(default=None, description="Its thread (default: a new one).")
    artifacts: list[ArtifactIn] = Field(default_factory=list, max_length=100)


class ReplyIn(_In):
    agent: Agent
    body: Text = Field(max_length=inboxes.MAX_BODY)
    artifacts: list[ArtifactIn] = Field(default_factory=list, max_length=100)


class LeaseIn(_In):
    agent: Agent
    lease: Lease = 300


class ProgressIn(_In):
    agent: Agent
    progress: Text = Field(max_length=inboxes.MAX_BODY)


class FinishIn(_In):
    agent: Agent
    note: Note = None


class FetchIn(_In):
    agent: Agent
    limit: int = Field(default=100, ge=1, le=1000)


class RepliesIn(_In):
    agent: Agent
    reply_to: int | None = Field(default=None, ge=1, le=MAX_SEQ, description="Only replies to it.")
    wait: Wait = 0


class ArtifactOut(BaseModel):
    name: str
    sha256: str
    size: int


class MessageOut(BaseModel):
    """The shape of ``telecoder inbox show ID --json``."""

    model_config = ConfigDict(populate_by_name=True)

    id: int
    thread: str
    kind: str = Field(description="message, reply, question or answer.")
    sender: str = Field(alias="from")
    to: str | None
    body: str
    reply_to: int | None
    status: str = Field(description="open, claimed, done, failed or cancelled (as of now).")
    claimed_by: str | None
    lease_until: str | None
    progress: str | None
    note: str | None
    artifacts: list[ArtifactOut]
    created_at: str
    updated_at: str


class ArtifactContentOut(ArtifactOut):
    content_base64: str


class LatestOut(BaseModel):
    id: int = Field(description="The highest message id so far (0: none yet).")


def _out(message: Message) -> MessageOut:
    return MessageOut.model_validate(message.to_dict())


def _all(messages: Sequence[Message]) -> list[MessageOut]:
    return [_out(m) for m in messages]


def _files(artifacts: Sequence[ArtifactIn]) -> list[tuple[str, bytes]]:
    found = []
    for a in artifacts:
        try:
            found.append((a.name, base64.b64decode(a.content_base64, validate=True)))
        except (binascii.Error, ValueError):
            raise BadInput(f"artifact {a.name}: content_base64 is not base64") from None
    return found


# --- routes -----------------------------------------------------------------------------------


@router.post(
    "/messages",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Send a message to an agent or a thread",
)
async def send(body: SendIn, store: StoreDep, _: PrincipalDep) -> MessageOut:
    if body.to is None and body.thread is None:
        raise BadInput("say where it goes: to (an agent) or thread")
    sent = await store.inbox.send(
        sender=body.agent,
        body=body.body,
        recipient=body.to,
        thread=body.thread,
        artifacts=_files(body.artifacts),
    )
    return _out(sent)


@router.get("/messages", responses=_ERRORS, summary="Messages in id order; a long-poll with wait")
async def list_messages(
    store: StoreDep,
    principal: PrincipalDep,
    agent: Annotated[Text | None, Query(max_length=inboxes.MAX_NAME)] = None,
    thread: Annotated[Text | None, Query(max_length=inboxes.MAX_NAME)] = None,
    status: Annotated[MessageStatus | None, Query()] = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Ids above this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, allow_inf_nan=False)] = 0,
) -> list[MessageOut]:
    """Messages to or from ``agent``, in ``thread``, with ``status``, with an id above
    ``after``. With ``wait``, waits up to that many seconds for one; ``[]`` when none came.
    A member's own only."""
    owner = roles.list_owner(principal)

    async def probe() -> list[Message] | None:
        found = await store.inbox.list(
            agent=agent, thread=thread, status=status, after=after, limit=limit, owner=owner
        )
        return found or None

    if wait <= 0:
        return _all(await probe() or [])
    try:
        return _all(await store.inbox.wait(probe, seconds=wait, what="message"))
    except TimedOut:
        return []


@router.get("/latest", responses=_ERRORS, summary="The highest message id so far")
async def latest(store: StoreDep, principal: PrincipalDep) -> LatestOut:
    return LatestOut(id=await store.inbox.latest(owner=roles.list_owner(principal)))


@router.get("/messages/{message_id}", responses=_ERRORS, summary="One message")
async def get_message(
    message_id: MessageId, store: StoreDep, principal: PrincipalDep
) -> MessageOut:
    return _out(await store.inbox.get(message_id, owner=roles.list_owner(principal)))


@router.get(
    "/messages/{message_id}/artifacts/{name}",
    responses=_ERRORS,
    summary="An artifact of a message, base64, with its SHA-256",
)
async def get_artifact(
    message_id: MessageId,
    name: Annotated[Text, Path(min_length=1, max_length=inboxes.MAX_NAME)],
    store: StoreDep,
    principal: PrincipalDep,
) -> ArtifactContentOut:
    owner = roles.list_owner(principal)
    message = await store.inbox.get(message_id, owner=owner)
    content = await store.inbox.artifact(message_id, name, owner=owner)
    record = next(a for a in message.artifacts if a.name == name)
    encoded = base64.b64encode(content).decode("ascii")
    return ArtifactContentOut(**record.to_dict(), content_base64=encoded)


@router.post(
    "/messages/{message_id}/reply",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Reply to a message: in its thread, to its sender",
)
async def reply(
    message_id: MessageId, body: ReplyIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    sent = await store.inbox.reply(
        message_id, sender=body.agent, body=body.body, artifacts=_files(body.artifacts)
    )
    return _out(sent)


@router.post(
    "/messages/{message_id}/claim",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Hold a message for lease seconds (409 conflict: another agent holds it)",
)
async def claim(
    message_id: MessageId, body: LeaseIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    return _out(await store.inbox.claim(message_id, body.agent, lease=body.lease))


@router.post(
    "/messages/{message_id}/renew",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Extend the caller's claim (409 lease_lost: it expired or was taken)",
)
async def renew(
    message_id: MessageId, body: LeaseIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    return _out(await store.inbox.renew(message_id, body.agent, lease=body.lease))


@router.post(
    "/messages/{message_id}/update",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Record the holder's progress",
)
async def update(
    message_id: MessageId, body: ProgressIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    return _out(await store.inbox.update(message_id, body.agent, body.progress))


async def _finish(
    store: Store, message_id: int, body: FinishIn, ending: MessageStatus
) -> MessageOut:
    return _out(await store.inbox.finish(message_id, body.agent, ending, body.note))


@router.post(
    "/messages/{message_id}/done",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="End a message done",
)
async def done(
    message_id: MessageId, body: FinishIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    return await _finish(store, message_id, body, MessageStatus.DONE)


@router.post(
    "/messages/{message_id}/fail",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="End a message failed",
)
async def fail(
    message_id: MessageId, body: FinishIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    return await _finish(store, message_id, body, MessageStatus.FAILED)


@router.post(
    "/messages/{message_id}/cancel",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Cancel a message that has not ended",
)
async def cancel(
    message_id: MessageId, body: FinishIn, store: StoreDep, _: PrincipalDep
) -> MessageOut:
    return await _finish(store, message_id, body, MessageStatus.CANCELLED)


@router.post(
    "/fetch",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="The messages to agent it has not seen, oldest first; seen from now on",
)
async def fetch(body: FetchIn, store: StoreDep, _: PrincipalDep) -> list[MessageOut]:
    return _all(await store.inbox.fetch(body.agent, limit=body.limit))


@router.post(
    "/replies",
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Replies to agent it has not seen; a long-poll with wait",
)
async def replies(body: RepliesIn, store: StoreDep, _: PrincipalDep) -> list[MessageOut]:
    """The replies and answers to ``agent`` it has not been shown (to ``reply_to`` only, if
    given), shown from now on; with ``wait``, waits up to that many seconds for one."""

    async def probe() -> list[Message] | None:
        return await store.inbox.unread_replies(body.agent, reply_to=body.reply_to) or None

    if body.wait <= 0:
        return _all(await probe() or [])
    try:
        return _all(await store.inbox.wait(probe, seconds=body.wait, what="reply"))
    except TimedOut:
        return []
