"""The chat and ticket channels the settings configure (GitHub and hooks have their own routes)."""

from __future__ import annotations

from pydantic import SecretStr

from telecoder.channels.jira import JiraChannel
from telecoder.channels.linear import LinearChannel
from telecoder.channels.telegram import TelegramChannel
from telecoder.protocols import Channel
from telecoder.settings import Settings


def from_settings(settings: Settings) -> dict[str, Channel]:
    """The chat and ticket channels the settings configure, by name (GitHub and hooks have
    their own routes). Each channel module adds itself here when its settings are set."""
    found: dict[str, Channel] = {}
    # --- Slack ---
    if settings.slack_bot_token is not None:
        from telecoder.channels.slack import SlackChannel

        found["slack"] = SlackChannel(
            bot_token=settings.slack_bot_token.get_secret_value(),
            signing_secret=_secret(settings.slack_signing_secret),
            api_url=settings.slack_api_url,
            app_token=_secret(settings.slack_app_token),
            public_url=settings.public_url,
        )
    # --- end Slack ---
    # Linear and Jira (channels/linear.py, channels/jira.py): a secret and API credentials.
    for ticket in (LinearChannel.from_settings(settings), JiraChannel.from_settings(settings)):
        if ticket is not None:
            found[ticket.name] = ticket
    if settings.telegram_bot_token is not None:
        found["telegram"] = TelegramChannel.from_settings(settings)
    return found


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def notifying(settings: Settings) -> list[str]:
    """The configured channels that can write to someone (``Notifying``: Slack, Telegram),
    known from the settings alone — intake asks on every request that names a target."""
    tokens = {"slack": settings.slack_bot_token, "telegram": settings.telegram_bot_token}
    return [name for name, token in tokens.items() if token is not None]
