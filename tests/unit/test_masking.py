"""The Masker: every known secret value, and its base64, becomes ``***``; nothing else changes."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder.masking import (
    Masker,
    MaskingFilter,
    config_secrets,
    install_log_filter,
    url_credentials,
    without_credentials,
)
from telecoder.settings import Settings

TOKEN = "ghp_" + "Zq8x" * 9


def test_values_are_masked_wherever_they_appear() -> None:
    masker = Masker([TOKEN, "sk-other-secret-value"])
    assert masker.text(f"token={TOKEN}; again{TOKEN}.") == "token=***; again***."
    assert masker.text("nothing here") == "nothing here"
    data = {"text": f"a {TOKEN}", "n": 3, "list": [TOKEN, {"deep": "sk-other-secret-value"}]}
    assert masker.data(data) == {"text": "a ***", "n": 3, "list": ["***", {"deep": "***"}]}


def test_non_ascii_text_around_a_value_is_kept() -> None:
    assert Masker([TOKEN]).text(f"ünïcødé 😀 {TOKEN} ok") == "ünïcødé 😀 *** ok"


def test_short_values_are_not_masked() -> None:
    masker = Masker(["1234567", ""])
    assert not masker
    assert masker.text("pin 1234567") == "pin 1234567"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"x-access-token:"])
def test_base64_is_masked_at_any_alignment(prefix: bytes) -> None:
    masker = Masker([TOKEN])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(prefix + TOKEN.encode() + b"tail").decode()
        masked = masker.text(f"Authorization: Basic {encoded}")
        assert "***" in masked
        # What is left encodes the prefix and the tail, at most a character of the token each.
        left = masked.split()[-1].replace("***", "")
        assert len(left) <= (len(prefix) + len(b"tail")) * 4 // 3 + 4


def test_adding_values_makes_a_new_masker() -> None:
    masker = Masker([TOKEN])
    more = masker.adding(["repo-password-123"])
    assert more.text("repo-password-123") == "***"
    assert masker.text("repo-password-123") == "repo-password-123"
    assert masker.adding([TOKEN]) is masker
    assert TOKEN not in repr(more)


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("https://user:p%40ssword1@host/a/b.git", {"user:p%40ssword1", "user:p@ssword1",
                                                   "p%40ssword1", "p@ssword1"}),
        (f"https://{TOKEN}@github.com/a/b.git", {TOKEN}),
        ("https://alice@bitbucket.org/a/b.git", set()),  # a user name, no secret
        ("ssh://git@github.com/a/b.git", set()),
        ("git@github.com:a/b.git", set()),
        ("/srv/git/a/b.git", set()),
    ],
)  # fmt: skip
def test_url_credentials(url: str, secrets: set[str]) -> None:
    assert set(url_credentials(url)) == secrets


def test_without_credentials() -> None:
    assert without_credentials("https://u:p@host:8443/a/b.git") == "https://host:8443/a/b.git"
    assert without_credentials("/srv/git/a.git") == "/srv/git/a.git"


def test_from_settings_knows_every_secret(tmp_path: Path) -> None:
    (tmp_path / "config.env").write_text(
        "# comment\nTELECODER_DB_PASSWORD='config-password'\nexport SLACK_BOT_TOKEN=xoxb-config-1\n"
        "TELECODER_PORT=7080\nTELECODER_ENGINE=claude-code-engine\n"
    )
    settings = Settings(
        home=tmp_path,
        github_token=SecretStr(TOKEN),
        api_token=SecretStr("alice:alice-token-1, bare-token-22"),
        engine_env=("ANTHROPIC_API_KEY", "OPENAI_BASE_URL"),
    )
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-secret-1",
        "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",  # an endpoint, not a secret
        "MY_SERVICE_SECRET": "service-secret-1",
        "HOME": "/home/operator",
    }
    masker = Masker.from_settings(settings, environ)
    for value in (
        TOKEN, "alice-token-1", "bare-token-22", "sk-ant-secret-1", "service-secret-1",
        "config-password", "xoxb-config-1",
    ):  # fmt: skip
        assert masker.text(f"<{value}>") == "<***>", value
    for value in ("http://127.0.0.1:9999/v1", "/home/operator", "claude-code-engine", "alice"):
        assert masker.text(value) == value
    assert config_secrets(tmp_path / "missing.env") == []


def test_from_settings_knows_the_channels_secrets_however_they_were_set(tmp_path: Path) -> None:
    secrets = {
        "slack_bot_token": "xoxb-slack-bot-1",
        "slack_signing_secret": "slack-signing-1",
        "telegram_bot_token": "123456:telegram-token-1",
        "linear_api_key": "lin_api_key_1",
        "jira_api_token": "jira-api-token-1",
        "dispatcher_api_key": "sk-dispatcher-1",
    }
    settings = Settings(home=tmp_path, **{k: SecretStr(v) for k, v in secrets.items()})
    masker = Masker.from_settings(settings, environ={})
    for value in secrets.values():
        assert masker.text(f"said {value}!") == "said ***!"


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("telecoder.test_masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        handler.addFilter(MaskingFilter(Masker([TOKEN])))
        logger.warning("pushing with %s to %s", TOKEN, "origin")
        try:
            raise RuntimeError(f"git said {TOKEN}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "pushing with *** to origin" in written
    assert "RuntimeError: git said ***" in written
    assert TOKEN not in written


def test_install_log_filter_reaches_the_handlers_of_named_loggers() -> None:
    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("uvicorn.test_masking")
    logger.addHandler(handler)
    try:
        install_log_filter(Masker([TOKEN]), loggers=("uvicorn",))
        install_log_filter(Masker([TOKEN]), loggers=("uvicorn",))  # once is enough
        assert [type(f) for f in handler.filters] == [MaskingFilter]
    finally:
        logger.removeHandler(handler)
