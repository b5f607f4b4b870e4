"""Where tasks come from: verify and parse inbound requests, reply into their thread."""

from __future__ import annotations

from telecoder.protocols import Channel
from telecoder.settings import Settings


def from_settings(settings: Settings) -> dict[str, Channel]:
    """The chat and ticket channels the settings configure, by name (GitHub and hooks have
    their own routes). Each channel module adds itself here when its settings are set."""
    found: dict[str, Channel] = {}
    if settings.telegram_bot_token is not None:
        from telecoder.channels.telegram import TelegramChannel

        found["telegram"] = TelegramChannel.from_settings(settings)
    return found
