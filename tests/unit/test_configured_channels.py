"""Which configured channels can notify someone is known from the settings alone, and agrees
with the channel objects those settings build (the ones that implement ``Notifying``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr

from telecoder.channels import configured
from telecoder.channels.telegram import TelegramChannel
from telecoder.protocols import Notifying
from telecoder.settings import Settings


def test_notifying_agrees_with_the_channels_built(tmp_path: Path) -> None:
    secret = SecretStr("s3cret-value-0123")
    settings = Settings(
        home=tmp_path,
        slack_bot_token=secret,
        slack_signing_secret=secret,
        telegram_bot_token=SecretStr("123:token"),
        linear_webhook_secret=secret,
        linear_api_key=secret,
        jira_webhook_secret=secret,
        jira_url="https://acme.atlassian.net",
        jira_email="bot@acme.example",
        jira_api_token=secret,
    )
    built = configured.from_settings(settings)
    try:
        assert set(built) == {"slack", "telegram", "linear", "jira"}
        able = sorted(name for name, channel in built.items() if isinstance(channel, Notifying))
        assert sorted(configured.notifying(settings)) == able == ["slack", "telegram"]
    finally:
        telegram = built["telegram"]
        assert isinstance(telegram, TelegramChannel)
        asyncio.run(telegram.close())
    assert configured.notifying(Settings(home=tmp_path)) == []
