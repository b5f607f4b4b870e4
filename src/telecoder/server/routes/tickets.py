"""``POST /api/channels/linear/webhook`` and ``POST /api/channels/jira/webhook``.

The signature is the authentication and is checked first: a bad or missing one (or a stale
Linear timestamp) is a 401 and starts nothing. A channel that is not configured is a 404; a
body that is not JSON a 422. Each message the delivery holds goes to the conversation core
(``Conversations.receive``): it queues a session for the ticket, continues the ticket's session,
or says why not; a redelivery is a duplicate and makes nothing twice. The answer is a 202 with
what happened; the status comment on the ticket is written in the background.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from telecoder.channels.jira import JiraChannel
from telecoder.channels.linear import LinearChannel
from telecoder.errors import HookNotFound
from telecoder.server.deps import StateDep
from telecoder.server.schemas import ErrorOut
from telecoder.server.state import ServerState

router = APIRouter(prefix="/api/channels", tags=["channels"])
NOT_CONFIGURED = {
    "linear": "Linear is not configured: set TELECODER_LINEAR_WEBHOOK_SECRET and "
    "TELECODER_LINEAR_API_KEY",
    "jira": "Jira is not configured: set TELECODER_JIRA_WEBHOOK_SECRET, TELECODER_JIRA_URL, "
    "TELECODER_JIRA_EMAIL and TELECODER_JIRA_API_TOKEN",
}


class TicketAnswer(BaseModel):
    action: str = Field(
        description="queued, continued, duplicate, ignored, answered, asked or busy."
    )
    session_id: str | None = Field(default=None, description="The session it started or went on.")
    reason: str | None = Field(default=None, description="Why nothing was queued.")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or wrong signature, or stale: nothing done."},
    404: {"model": ErrorOut, "description": "The channel is not configured."},
    422: {"model": ErrorOut, "description": "The body is not JSON."},
}


@router.post(
    "/linear/webhook",
    status_code=202,
    response_model=TicketAnswer,
    responses=_RESPONSES,
    summary="Receive a Linear webhook",
)
async def linear(request: Request, state: StateDep) -> Any:
    return await _receive(request, state, "linear")


@router.post(
    "/jira/webhook",
    status_code=202,
    response_model=TicketAnswer,
    responses=_RESPONSES,
    summary="Receive a Jira webhook",
)
async def jira(request: Request, state: StateDep) -> Any:
    return await _receive(request, state, "jira")


async def _receive(request: Request, state: ServerState, name: str) -> JSONResponse:
    conversations = state.conversations
    channel = conversations.channels.get(name) if conversations is not None else None
    if conversations is None or not isinstance(channel, LinearChannel | JiraChannel):
        raise HookNotFound(NOT_CONFIGURED[name])
    body = await request.body()
    channel.verify(request.headers, body, time.time())
    messages, why = channel.read(request.headers, body)
    answer = TicketAnswer(action="ignored", reason=why or "nothing to do")
    for inbound in messages:
        got = await conversations.receive(inbound)
        answer = TicketAnswer(action=got.action, session_id=got.session_id, reason=got.reason)
    return JSONResponse(answer.model_dump(exclude_none=True), status_code=202)
