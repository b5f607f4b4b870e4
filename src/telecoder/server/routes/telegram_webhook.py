"""``POST /api/channels/telegram/webhook``: Telegram's updates, in webhook mode.

Telegram sends each update with ``X-Telegram-Bot-Api-Secret-Token``, the secret given to
``setWebhook`` (``TELECODER_TELEGRAM_WEBHOOK_SECRET``), compared in constant time: a missing or
wrong one is a 401 and starts nothing. Without a bot token and a webhook secret the endpoint is
a 404. The update then goes where a polled one goes (``TelegramBot.receive``): the same update
twice makes one session.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from telecoder.channels import json_object
from telecoder.errors import BadInput, HookNotFound
from telecoder.server.schemas import ErrorOut
from telecoder.telegram_bot import TelegramBot

router = APIRouter(prefix="/api/channels/telegram", tags=["channels"])
NOT_CONFIGURED = (
    "the Telegram webhook is not configured: set TELECODER_TELEGRAM_BOT_TOKEN and "
    "TELECODER_TELEGRAM_WEBHOOK_SECRET"
)


class TelegramAnswer(BaseModel):
    action: str = Field(description="queued, continued, duplicate, ignored, refused, answered…")
    reason: str | None = Field(default=None, description="Why nothing was queued.")
    session_id: str | None = Field(default=None, description="The session it went to.")


@router.post(
    "/webhook",
    response_model=TelegramAnswer,
    response_model_exclude_none=True,
    responses={
        401: {"model": ErrorOut, "description": "Missing or wrong secret token: nothing started."},
        404: {"model": ErrorOut, "description": "Telegram's webhook is not configured."},
        422: {"model": ErrorOut, "description": "Not a Telegram update."},
    },
    summary="Receive a Telegram update",
)
async def webhook(request: Request) -> Any:
    bot: TelegramBot | None = getattr(request.app.state, "telegram", None)
    if bot is None or not bot.channel.webhook_mode:
        raise HookNotFound(NOT_CONFIGURED)
    body = await request.body()
    bot.channel.verify(request.headers, body, time.time())
    update = json_object(body)
    if not isinstance(update.get("update_id"), int):
        raise BadInput("not a Telegram update: an object with an integer update_id")
    await bot.channel.ready()
    answers = [await bot.receive(inbound) for inbound in bot.channel.parse_update(update)]
    if not answers:
        return TelegramAnswer(action="ignored", reason="no message for TeleCoder")
    first = answers[0]
    return TelegramAnswer(action=first.action, reason=first.reason, session_id=first.session_id)
