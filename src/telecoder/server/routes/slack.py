"""``POST /api/channels/slack/events`` and ``/actions``: Slack's Events API and its buttons.

The signature (Slack's v0 scheme with ``TELECODER_SLACK_SIGNING_SECRET``, within five minutes)
is checked first: a bad or stale one is a 401 and starts nothing. ``url_verification`` is
answered with its challenge. An event is carried into its thread's session or a new one by the
conversation core, under its ``event_id``: a redelivery (``X-Slack-Retry-Num``) makes nothing
twice. The answer comes at once; replies are posted in the background and the work is queued.

``/actions`` takes the interactivity payload (form-encoded ``payload=`` JSON) of the Cancel and
Retry buttons on a status message: it acts only on the session of the thread the click came
from, and says what it did in that thread.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from telecoder.channels import json_object
from telecoder.channels.slack import NAME, SlackChannel, thread_key
from telecoder.channels.slack_blocks import CANCEL, RETRY
from telecoder.conversation import Conversations
from telecoder.errors import BadInput, Conflict, HookNotFound, SessionNotFound
from telecoder.server.deps import StateDep
from telecoder.server.schemas import ErrorOut
from telecoder.server.state import ServerState

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/channels/slack", tags=["channels"])
NOT_CONFIGURED = (
    "Slack is not configured: set TELECODER_SLACK_BOT_TOKEN and TELECODER_SLACK_SIGNING_SECRET"
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "A missing, wrong or stale signature: nothing done."},
    404: {"model": ErrorOut, "description": "Slack is not configured."},
    422: {"model": ErrorOut, "description": "The body is not what Slack sends."},
}


class SlackAnswer(BaseModel):
    action: str = Field(
        description="queued, continued, duplicate, ignored, answered, asked, busy, "
        "cancelled, retried or refused."
    )
    session_id: str | None = Field(default=None, description="The session it concerns.")
    reason: str | None = Field(default=None, description="Why nothing (more) happened.")
    challenge: str | None = Field(default=None, description="url_verification's challenge.")


def _slack(state: ServerState) -> tuple[Conversations, SlackChannel]:
    conversations = state.conversations
    channel = conversations.channels.get(NAME) if conversations is not None else None
    if conversations is None or not isinstance(channel, SlackChannel):
        raise HookNotFound(NOT_CONFIGURED)
    if state.settings.slack_signing_secret is None:
        raise HookNotFound(NOT_CONFIGURED)
    return conversations, channel


def _answer(answer: SlackAnswer) -> JSONResponse:
    return JSONResponse(answer.model_dump(exclude_none=True), status_code=200)


@router.post(
    "/events",
    response_model=SlackAnswer,
    responses=_ERRORS,
    summary="Receive a Slack Events API request",
)
async def events(request: Request, state: StateDep) -> Any:
    conversations, channel = _slack(state)
    body = await request.body()
    channel.verify(request.headers, body, time.time())
    payload = json_object(body)
    if payload.get("type") == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise BadInput("url_verification without a challenge")
        return _answer(SlackAnswer(action="verified", challenge=challenge))
    found = channel.parse(request.headers, body)
    if not found:
        reason = f"not a message for TeleCoder ({payload.get('type')})"
        return _answer(SlackAnswer(action="ignored", reason=reason))
    inbound = found[0]
    try:
        received = await conversations.receive(inbound)
    except BadInput as e:  # e.g. the registered repository is gone: say so, once
        if await state.store.channel_events.once(NAME, inbound.key, "refused"):
            origin = {**dict(inbound.reply), "channel": NAME, "thread": inbound.thread}
            text = f"I could not start on this: {e.message}"
            state.background.start(channel.say(origin, text), "a Slack refusal")
        return _answer(SlackAnswer(action="refused", reason=e.message))
    answer = SlackAnswer(
        action=received.action, session_id=received.session_id, reason=received.reason
    )
    return _answer(answer)


@router.post(
    "/actions",
    response_model=SlackAnswer,
    responses=_ERRORS,
    summary="Receive a Slack button click (interactivity)",
)
async def actions(request: Request, state: StateDep) -> Any:
    _, channel = _slack(state)
    body = await request.body()
    channel.verify(request.headers, body, time.time())
    return _answer(await act(state, channel, _payload(body)))


async def act(state: ServerState, channel: SlackChannel, payload: dict[str, Any]) -> SlackAnswer:
    """A click on a status message's Cancel or Retry button (over HTTP or Socket Mode)."""
    if payload.get("type") != "block_actions":
        return SlackAnswer(action="ignored", reason=f"{payload.get('type')!r} is no click")
    clicked = [a for a in payload.get("actions") or [] if isinstance(a, dict)]
    click = next((a for a in clicked if a.get("action_id") in (CANCEL, RETRY)), None)
    if click is None:
        return SlackAnswer(action="ignored", reason="not a TeleCoder button")
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    channel_id = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    thread_ts = container.get("thread_ts") or message.get("thread_ts") or message.get("ts")
    if not isinstance(channel_id, str) or not isinstance(thread_ts, str):
        raise BadInput("the click names no channel and thread")
    session_id = str(click.get("value") or "")
    thread = f"{NAME}:{thread_key(channel_id, thread_ts)}"
    user = (payload.get("user") or {}).get("id") or "somebody"
    origin = {"channel": NAME, "channel_id": channel_id, "thread_ts": thread_ts}
    try:
        session = await state.store.sessions.get(session_id)
    except SessionNotFound:
        session = None
    if session is None or session.thread != thread:
        reason = "the button's session is not this thread's"
        return SlackAnswer(action="refused", session_id=session_id or None, reason=reason)
    try:
        if click["action_id"] == CANCEL:
            done = await state.store.sessions.cancel(session.id)
            text = f"<@{user}> cancelled session `{session.id}`."
            action = "cancelled"
        else:
            done = await state.store.sessions.retry(session.id)
            state.bus.poke()
            text = f"<@{user}> asked for a retry: session `{done.id}` is queued."
            action = "retried"
    except Conflict as e:
        state.background.start(channel.say(origin, e.message), "a Slack button's answer")
        return SlackAnswer(action="refused", session_id=session.id, reason=e.message)
    state.background.start(channel.say(origin, text), "a Slack button's answer")
    state.background.start(channel.report(done.to_dict()), f"the report of {done.id}")
    return SlackAnswer(action=action, session_id=done.id)


def connect(state: ServerState) -> None:
    """Hand Socket Mode's button clicks to ``act``, when Slack is a channel."""
    channel = state.conversations.channels.get(NAME) if state.conversations else None
    if isinstance(channel, SlackChannel):

        async def on_action(payload: dict[str, Any]) -> None:
            await act(state, channel, payload)

        channel.on_action = on_action


def _payload(body: bytes) -> dict[str, Any]:
    """The ``payload`` field of Slack's form-encoded interactivity request, as JSON."""
    try:
        fields = parse_qs(body.decode(), strict_parsing=True)
        payload = json.loads(fields["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError):
        raise BadInput("the body is not a form with a JSON payload field") from None
    if not isinstance(payload, dict):
        raise BadInput("the payload is not a JSON object")
    return payload
