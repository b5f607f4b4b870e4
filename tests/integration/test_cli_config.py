"""`telecoder config list|get|set|unset`: the real command on a real config.env, read back by
`Settings.load()` as every other command reads it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from tests.cli import cli_env, telecoder

SECRET = "sk-ant-api03-" + "Q" * 40 + "wxyz"


def test_set_get_round_trip_masks_secrets_and_writes_0600(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert telecoder("config", "set", "port", "8123", env=env).returncode == 0
    done = telecoder("config", "set", "ANTHROPIC_API_KEY", SECRET, env=env)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    done = telecoder("config", "set", "TELECODER_API_TOKEN", "ops:tok-" + "a" * 30, env=env)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "config.env"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "TELECODER_PORT=8123\n" in config.read_text()
    assert telecoder("config", "get", "TELECODER_PORT", env=env).stdout == "8123\n"
    shown = telecoder("config", "get", "anthropic-api-key", env=env).stdout
    assert shown == "****wxyz\n"
    listed = json.loads(telecoder("config", "list", "--json", env=env).stdout)
    by_key = {row["key"]: row for row in listed}
    assert by_key["TELECODER_PORT"]["value"] == "8123"
    assert by_key["ANTHROPIC_API_KEY"]["secret"]
    assert by_key["TELECODER_API_TOKEN"]["secret"]
    assert SECRET not in json.dumps(listed)
    assert "tok-aaaa" not in json.dumps(listed)
    text = telecoder("config", "list", env=env).stdout
    assert "TELECODER_PORT" in text
    assert SECRET not in text
    # What the settings read: the same values.
    probe = (
        "from telecoder.settings import Settings; s = Settings.load(); "
        "print(s.port, s.api_token.get_secret_value().split(':')[0])"
    )
    read = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert read.stdout == "8123 ops\n"


def test_unknown_key_and_bad_value_exit_2_with_a_suggestion(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    done = telecoder("config", "set", "TELECODER_PROT", "80", env=env)
    assert done.returncode == 2
    assert "did you mean TELECODER_PORT" in done.stderr
    done = telecoder("config", "set", "worker-concurency", "3", env=env)
    assert done.returncode == 2
    assert "TELECODER_WORKER_CONCURRENCY" in done.stderr
    done = telecoder("config", "set", "port", "eighty", env=env)
    assert done.returncode == 2
    assert "integer" in done.stderr
    done = telecoder("config", "set", "port", "99999", "--json", env=env)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "bad_input"
    done = telecoder("config", "set", "github-token", "it's${HOME}", env=env)
    assert done.returncode == 2
    assert "it's" not in done.stderr
    assert not (tmp_path / "config.env").exists()


def test_unset_keeps_other_lines_and_get_says_unset(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    config = tmp_path / "config.env"
    config.write_text("# mine\nTELECODER_ENGINE=codex\nTELECODER_PORT=9000\n")
    assert telecoder("config", "set", "engine", "claude-code", env=env).returncode == 0
    assert telecoder("config", "unset", "port", env=env).returncode == 0
    assert config.read_text() == "# mine\nTELECODER_ENGINE=claude-code\n"
    done = telecoder("config", "get", "port", env=env)
    assert done.returncode == 3
    assert "not set" in done.stderr
    unset = json.loads(telecoder("config", "unset", "port", "--json", env=env).stdout)
    assert unset == {"key": "TELECODER_PORT", "removed": False}
    # A value with spaces is quoted, and read back whole.
    assert telecoder("config", "set", "git-author-name", "Tele Coder", env=env).returncode == 0
    assert "TELECODER_GIT_AUTHOR_NAME='Tele Coder'" in config.read_text()
    assert telecoder("config", "get", "git_author_name", env=env).stdout == "Tele Coder\n"
