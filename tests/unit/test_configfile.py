"""config.env's pure parts: key names, masking, quoting read back by python-dotenv, vendors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from telecoder.cli import configfile
from telecoder.cli.setup import detect_provider
from telecoder.errors import BadInput


def test_names_resolve_in_every_spelling_and_unknown_ones_suggest() -> None:
    for spelling in ("port", "PORT", "telecoder-port", "TELECODER_PORT"):
        assert configfile.resolve(spelling).name == "TELECODER_PORT"
    assert configfile.resolve("github_token").name == "GITHUB_TOKEN"
    assert configfile.resolve("OPENAI_API_KEY").secret
    assert configfile.resolve("slack-signing-secret").secret
    assert not configfile.resolve("engine").secret
    with pytest.raises(BadInput, match="did you mean TELECODER_LEASE_SECONDS"):
        configfile.resolve("lease-secnds")
    with pytest.raises(BadInput, match="unknown setting"):
        configfile.resolve("zzzz")


def test_masking_shows_no_secret_and_no_url_password() -> None:
    key = configfile.resolve("api-token")
    assert configfile.masked(key, "short-secret") == "****"
    assert configfile.masked(key, "x" * 30 + "abcd") == "****abcd"
    url = configfile.masked(configfile.resolve("database-url"), "postgresql://u:pw123@h/db")
    assert url == "postgresql://u:****@h/db"
    assert configfile.masked(configfile.resolve("port"), "7080") == "7080"


@pytest.mark.parametrize("value", ["plain-0.1:/x@y", "two words", 'say "hi"', "a#b", "=x", ""])
def test_written_values_read_back_whole(tmp_path: Path, value: str) -> None:
    file = tmp_path / "config.env"
    configfile.update({"TELECODER_ENGINE": value, "OPENAI_API_KEY": "k"}, file)
    assert dotenv_values(file)["TELECODER_ENGINE"] == value
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    configfile.update({"TELECODER_ENGINE": None}, file)
    assert file.read_text() == "OPENAI_API_KEY=k\n"


@pytest.mark.parametrize("value", ["a'b", "a\\b", "x${HOME}", "two\nlines"])
def test_values_no_reader_keeps_are_refused(value: str) -> None:
    with pytest.raises(BadInput, match="cannot be kept"):
        configfile.check(configfile.resolve("engine"), value)


def test_values_are_parsed_as_the_setting_does() -> None:
    configfile.check(configfile.resolve("worker-concurrency"), "4")
    with pytest.raises(BadInput, match="TELECODER_WORKER_CONCURRENCY"):
        configfile.check(configfile.resolve("worker-concurrency"), "0")
    with pytest.raises(BadInput):
        configfile.check(configfile.resolve("db-pool-size"), "lots")


def test_a_model_keys_vendor_is_told_by_its_prefix() -> None:
    assert detect_provider("sk-ant-api03-abc") == ("Anthropic", "ANTHROPIC_API_KEY")
    assert detect_provider("sk-proj-abc") == ("OpenAI", "OPENAI_API_KEY")
    assert detect_provider("sk-abc") == ("OpenAI", "OPENAI_API_KEY")
    assert detect_provider("AIzaSyabc") == ("Gemini", "GEMINI_API_KEY")
    assert detect_provider("gsk_abc") is None
