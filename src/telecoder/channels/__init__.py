"""Where tasks come from: verify and parse inbound requests, reply into their thread."""

from __future__ import annotations

from telecoder.channels.jira import JiraChannel
from telecoder.channels.linear import LinearChannel
from telecoder.channels.telegram import TelegramChannel
from telecoder.protocols import Channel
from telecoder.settings import Settings


def from_settings(settings: Settings) -> dict[str, Channel]:
    """The chat and ticket channels the settings configure, by name (GitHub and hooks have
    their own routes). Each channel module adds itself here when its settings are set."""
    found: dict[str, Channel] = {}
    # Linear and Jira (channels/linear.py, channels/jira.py): a secret and API credentials.
    for ticket in (LinearChannel.from_settings(settings), JiraChannel.from_settings(settings)):
        if ticket is not None:
            found[ticket.name] = ticket
    if settings.telegram_bot_token is not None:
        found["telegram"] = TelegramChannel.from_settings(settings)
    return found
