"""The channels' settings: GitHub, Telegram, Slack, Linear and Jira, notifications out and the
dispatcher of channel messages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import NoDecode


class ChannelSettings(BaseModel):
    github_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TELECODER_GITHUB_TOKEN", "GITHUB_TOKEN"),
        description="Token for pushing to GitHub and opening pull requests.",
    )
    github_api_url: str = Field(
        default="https://api.github.com", description="GitHub REST API base (Enterprise: yours)."
    )
    github_app_id: str | None = Field(
        default=None,
        description="GitHub App id: act as the App (installation tokens) instead of a token.",
    )
    github_app_private_key: SecretStr | None = Field(
        default=None, description="The GitHub App's private key (PEM)."
    )
    github_app_private_key_file: Path | None = Field(
        default=None, description="A file holding the GitHub App's private key (PEM)."
    )
    github_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the GitHub webhook (App or repository): POST /api/webhooks/github "
        "verifies X-Hub-Signature-256 with it; unset, the endpoint answers 404.",
    )
    github_allowed_users: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="GitHub logins that may trigger sessions without write permission "
        "(comma-separated).",
    )
    github_label: str = Field(
        default="telecoder", description="Labelling an issue with it starts a session."
    )
    github_handle: str = Field(
        default="telecoder", description="@<handle> in an issue or comment starts a session."
    )
    github_denied_reply: bool = Field(
        default=False,
        description="Reply to a GitHub user without write permission who asks for a change.",
    )
    github_login: str | None = Field(
        default=None,
        description="TeleCoder's own GitHub login (e.g. myapp[bot]): its comments never trigger.",
    )
    # --- Telegram (see README, "Telegram") ---
    telegram_bot_token: SecretStr | None = Field(
        default=None,
        description="The Telegram bot's token (from @BotFather): set, telecoder serve answers on "
        "Telegram (long polling, or the webhook when TELECODER_TELEGRAM_WEBHOOK_SECRET is set).",
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org",
        description="The Telegram Bot API: methods at {url}/bot{token}/{method}.",
    )
    telegram_allowed_users: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Telegram user ids that may use the bot (comma-separated); none: nobody.",
    )
    telegram_allowed_chats: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Telegram group chat ids the bot works in (comma-separated); none: only "
        "private chats with allowed users.",
    )
    telegram_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Webhook mode: POST /api/channels/telegram/webhook checks "
        "X-Telegram-Bot-Api-Secret-Token against it, and serve does not long-poll.",
    )
    public_url: str | None = Field(
        default=None,
        description="The server's address as users reach it: links to sessions in replies.",
    )
    # --- ask for help / notifications ---
    notify_me: str | None = Field(
        default=None,
        description="Whom --notify slack:@me (CLI, API) means: your ids, e.g. "
        "slack:U123,telegram:456.",
    )
    # --- Slack (README, "Slack") ---
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="The Slack app's bot token (xoxb-…): set, Slack is a channel.",
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="The Slack app's signing secret: POST /api/channels/slack/events and "
        "/actions verify X-Slack-Signature with it; unset, they answer 404.",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack's Web API base (tests: a fake)."
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        description="The Slack app-level token (xapp-…): set, events come over Socket Mode "
        "(no public URL needed).",
    )
    # --- Linear and Jira (README, "Linear" and "Jira") ---
    linear_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret of the Linear webhook: POST /api/channels/linear/webhook "
        "verifies Linear-Signature with it; unset (or no API key), the endpoint answers 404.",
    )
    linear_api_key: SecretStr | None = Field(
        default=None, description="Linear API key TeleCoder comments with (Authorization header)."
    )
    linear_api_url: str = Field(
        default="https://api.linear.app/graphql", description="Linear's GraphQL endpoint."
    )
    linear_state: str = Field(
        default="Ready for Dev", description="A Linear issue entering this state starts a session."
    )
    linear_label: str = Field(
        default="telecoder", description="A Linear issue given this label starts a session."
    )
    jira_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the Jira webhook: POST /api/channels/jira/webhook verifies "
        "X-Hub-Signature with it; unset (or no URL, email, token), the endpoint answers 404.",
    )
    jira_url: str | None = Field(
        default=None, description="The Jira site, e.g. https://acme.atlassian.net."
    )
    jira_email: str | None = Field(
        default=None, description="The Atlassian account TeleCoder comments as (basic auth)."
    )
    jira_api_token: SecretStr | None = Field(
        default=None, description="That account's API token (basic auth with the email)."
    )
    jira_status: str = Field(
        default="Ready for Dev", description="A Jira issue moved to this status starts a session."
    )
    jira_label: str = Field(
        default="telecoder", description="A Jira issue given this label starts a session."
    )
    # --- notifications out (subscriptions) ---
    notify_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the deliverer looks for notifications to send."
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a subscriber has to answer one notification."
    )
    notify_max_tries: int = Field(
        default=10, ge=1, description="Tries of one notification before it fails for good."
    )
    notify_backoff_seconds: float = Field(
        default=5.0, gt=0, description="Wait after a notification's first failed try; doubles."
    )
    notify_backoff_max_seconds: float = Field(
        default=900.0, gt=0, description="Longest wait between two tries of a notification."
    )
    # --- the channels' dispatcher (see README, "Repositories and the dispatcher") ---
    dispatcher_model: str | None = Field(
        default=None,
        description="A small model that decides what a channel message asks for (run, answer, "
        "ask, ignore); unset: the rule-based dispatcher.",
    )
    dispatcher_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API base of the dispatcher's model "
        "({url}/chat/completions).",
    )
    dispatcher_api_key: SecretStr | None = Field(
        default=None, description="API key of the dispatcher's endpoint (a Bearer token)."
    )
    dispatcher_per_minute: int = Field(
        default=10,
        ge=0,
        description="Model calls per channel user per minute; past it a message is ignored "
        "(0: no limit).",
    )
