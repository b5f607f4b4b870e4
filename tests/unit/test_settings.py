"""Settings from the environment and ``$TELECODER_HOME/config.env``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telecoder.settings import DEFAULT_ENV_ALLOW, Settings

SECRET = "ghp_supersecret0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TELECODER_* or GITHUB_TOKEN from the machine; HOME is a fresh directory."""
    for name in list(os.environ):
        if name.startswith("TELECODER_") or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    return user_home


def test_defaults(clean_env: Path) -> None:
    settings = Settings.load()
    assert settings.home == clean_env / ".telecoder"
    assert settings.home.is_absolute()
    assert settings.store_url == f"sqlite:///{clean_env / '.telecoder' / 'telecoder.db'}"
    assert settings.worktrees == settings.home / "worktrees"
    assert settings.mirrors == settings.home / "mirrors"
    assert settings.env_allow == DEFAULT_ENV_ALLOW
    assert settings.github_token is None
    assert settings.engine is None  # an agent: the first installed with its key


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELECODER_HOME", str(tmp_path / "tc"))
    monkeypatch.setenv("TELECODER_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("TELECODER_WORKER_CONCURRENCY", "4")
    monkeypatch.setenv("TELECODER_WORKSPACE_DIR", str(tmp_path / "wt"))
    monkeypatch.setenv("TELECODER_DATABASE_URL", "postgresql://db.example/telecoder")
    settings = Settings.load()
    assert settings.home == tmp_path / "tc"
    assert settings.lease_seconds == 12.5
    assert settings.worker_concurrency == 4
    assert settings.worktrees == tmp_path / "wt"
    assert settings.store_url == "postgresql://db.example/telecoder"


def test_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECODER_ENV_ALLOW", "PATH, LANG ,,MY_VAR")
    monkeypatch.setenv("TELECODER_ENGINE_ENV", "OPENAI_API_KEY")
    settings = Settings.load()
    assert settings.env_allow == ("PATH", "LANG", "MY_VAR")
    assert settings.engine_env == ("OPENAI_API_KEY",)


def test_comma_list_given_as_an_argument() -> None:
    assert Settings(env_allow="A,B").env_allow == ("A", "B")
    assert Settings(env_allow=("C",)).env_allow == ("C",)


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECODER_LEASE_SECONDS", "0")
    with pytest.raises(ValueError, match="lease_seconds"):
        Settings.load()


def test_config_file_under_home_with_the_environment_winning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "tc"
    home.mkdir()
    (home / "config.env").write_text(
        "TELECODER_ENGINE=codex\n"
        "TELECODER_LEASE_SECONDS=40\n"
        "TELECODER_ENV_ALLOW=PATH,FROM_FILE\n"
        f"GITHUB_TOKEN={SECRET}\n"
    )
    monkeypatch.setenv("TELECODER_HOME", str(home))
    monkeypatch.setenv("TELECODER_LEASE_SECONDS", "7")
    settings = Settings.load()
    assert settings.engine == "codex"  # from the file
    assert settings.lease_seconds == 7  # the environment wins
    assert settings.env_allow == ("PATH", "FROM_FILE")
    assert settings.github_token is not None
    assert settings.github_token.get_secret_value() == SECRET


def test_config_file_elsewhere_is_not_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "config.env").write_text("TELECODER_ENGINE=codex\n")
    monkeypatch.setenv("TELECODER_HOME", str(tmp_path / "other"))
    assert Settings.load().engine is None


def test_overrides_win_over_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECODER_ENGINE", "codex")
    assert Settings.load(engine="aider").engine == "aider"


@pytest.mark.parametrize("variable", ["GITHUB_TOKEN", "TELECODER_GITHUB_TOKEN"])
def test_github_token_alias_is_never_printed(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, SECRET)
    settings = Settings.load()
    assert settings.github_token is not None
    assert settings.github_token.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in settings.model_dump_json()
    assert SECRET not in repr(settings.model_dump())


def test_home_with_a_tilde_is_expanded(clean_env: Path) -> None:
    settings = Settings(home=Path("~/elsewhere"))
    assert settings.home == clean_env / "elsewhere"
    assert settings.store_url == f"sqlite:///{clean_env / 'elsewhere' / 'telecoder.db'}"


def test_engine_control_settings_become_the_variables_engines_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings.load().engine_control_env() == {"TELECODER_MODEL_RETRIES": "2"}
    home = tmp_path / "tc"
    home.mkdir()
    (home / "config.env").write_text("TELECODER_AGENT_PATH=/opt/agents/bin\n")
    monkeypatch.setenv("TELECODER_HOME", str(home))
    monkeypatch.setenv("TELECODER_MODEL_RETRIES", "0")
    monkeypatch.setenv("TELECODER_ACP_COMMAND", "goose acp")
    monkeypatch.setenv("TELECODER_CHAT_IDLE_SECONDS", "90")
    monkeypatch.setenv("TELECODER_BUILTIN_MAX_ITERATIONS", "30")
    monkeypatch.setenv("TELECODER_BUILTIN_WALL_SECONDS", "600")
    settings = Settings.load()
    assert settings.engine_control_env() == {
        "TELECODER_AGENT_PATH": "/opt/agents/bin",
        "TELECODER_MODEL_RETRIES": "0",
        "TELECODER_ACP_COMMAND": "goose acp",
        "TELECODER_BUILTIN_MAX_ITERATIONS": "30",
        "TELECODER_BUILTIN_WALL_SECONDS": "600.0",
    }
    assert settings.chat_idle_seconds == 90
