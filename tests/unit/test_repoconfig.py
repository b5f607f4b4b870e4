""".telecoder.yml: parsed as data only, strictly, with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecoder.errors import BadInput
from telecoder.repoconfig import (
    FILENAME,
    MAX_BYTES,
    CommandSucceeds,
    FileExists,
    GitClean,
    RepoConfig,
    load,
    parse,
)

FULL = """
engine: claude-code
model: claude-sonnet-4-5
setup:
  - npm ci
verify:
  - pytest -q
  - ruff check .
checks:
  - file_exists: CHANGELOG.md
  - command_succeeds: test -s VERSION
  - git_clean: true
max_revisions: 3
verify_timeout: 120
setup_timeout: 900
"""


def test_every_setting() -> None:
    config = parse(FULL)
    assert config == RepoConfig(
        engine="claude-code",
        model="claude-sonnet-4-5",
        setup=["npm ci"],
        verify=["pytest -q", "ruff check ."],
        checks=[
            FileExists(file_exists="CHANGELOG.md"),
            CommandSucceeds(command_succeeds="test -s VERSION"),
            GitClean(git_clean=True),
        ],
        max_revisions=3,
        verify_timeout=120.0,
        setup_timeout=900.0,
    )
    assert config.has_checks


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_file_is_the_defaults(text: str) -> None:
    config = parse(text)
    assert config == RepoConfig()
    assert (config.engine, config.model, config.max_revisions) == (None, None, 2)
    assert (config.verify_timeout, config.setup_timeout) == (600, 1800)
    assert config.setup == []
    assert not config.has_checks


def test_one_command_may_be_a_string() -> None:
    assert parse("verify: make test\n").verify == ["make test"]
    assert parse("setup: make deps\n").setup == ["make deps"]


def test_setup_may_be_a_mapping_with_the_caches_settings() -> None:
    config = parse("setup:\n  commands: [npm ci, make]\n  cache_key: [.nvmrc, 'ci/*.lock']\n")
    assert config.setup == ["npm ci", "make"]
    assert config.setup_cache_key == [".nvmrc", "ci/*.lock"]
    assert config.setup_cache is True
    off = parse("setup: {commands: make deps, cache: false, cache_key: tools}\n")
    assert (off.setup, off.setup_cache, off.setup_cache_key) == (["make deps"], False, ["tools"])
    assert parse("setup: [npm ci]\n").setup_cache is True


def test_a_missing_file_is_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == RepoConfig()


def test_load_reads_the_worktrees_file(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_text("verify: [make check]\nmax_revisions: 0\n")
    assert load(tmp_path) == RepoConfig(verify=["make check"], max_revisions=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("verify: [pytest\n", "is not valid YAML"),
        ("- a\n- b\n", "must be a mapping of settings, not list"),
        ("max_revisions: -1\n", "max_revisions: Input should be greater than or equal to 0"),
        ("max_revisions: many\n", "max_revisions: Input should be a valid integer"),
        ("verify_timeout: 0\n", "verify_timeout: Input should be greater than 0"),
        ("verify: [1, [2]]\n", "verify.0: Input should be a valid string"),
        ("verify: ['']\n", "verify.0: String should have at least 1 character"),
        ("setup: [[npm, ci]]\n", "setup.0: Input should be a valid string"),
        ("setup_timeout: -5\n", "setup_timeout: Input should be greater than 0"),
        ("setup: {run: make}\n", "setup: unknown key 'run' (known: commands, cache_key, cache)"),
        ("setup: {commands: [make], cache: maybe}\n", "setup_cache: Input should be a valid"),
        ("setup_cache_key: [a]\n", "setup_cache_key is not a setting: use setup: {cache_key"),
        ("engines: codex\n", "engines: there is no setting 'engines': did you mean 'engine'?"),
        ("verfy: [pytest]\n", "verfy: there is no setting 'verfy': did you mean 'verify'?"),
        ("colour: red\n", "colour: there is no setting 'colour' (the settings: "),
        (
            "github: {label: x, colour: red}\n",
            "github.colour: there is no setting 'colour' here (see the README",
        ),
        ("checks: [{file_exists: a, git_clean: true}]\n", "checks.0: each check is one of"),
        ("checks: [{run: rm -rf /}]\n", "checks.0: each check is one of"),
        ("checks: [file_exists]\n", "checks.0: each check is one of"),
        ("checks: [{git_clean: false}]\n", "checks.0.git_clean: Input should be True"),
        ("checks: [{file_exists: ''}]\n", "checks.0.file_exists: String should have at least"),
        ("engine: ''\n", "engine: String should have at least 1 character"),
    ],
)
def test_a_malformed_file_is_bad_input_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse(text)
    assert FILENAME in raised.value.message
    assert message in raised.value.message


def test_parsing_runs_nothing(tmp_path: Path) -> None:
    # A YAML tag that would construct Python objects is refused by the safe loader.
    marker = tmp_path / "ran"
    text = f"verify: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(BadInput, match="not valid YAML"):
        parse(text)
    assert not marker.exists()


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_text("# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(BadInput, match="larger than 64 KiB"):
        load(tmp_path)


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "outside.yml"
    secret.write_text("verify: [make]\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / FILENAME).symlink_to(secret)
    with pytest.raises(BadInput, match="must be a regular file"):
        load(repo)


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"verify: ['\xff']\n")
    with pytest.raises(BadInput, match="not UTF-8"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("text", "memory"),
    [("", "on"), ("memory: off\n", "off"), ("memory: on\n", "on"), ("memory: 'OFF'\n", "off")],
)
def test_memory_is_on_or_off(text: str, memory: str) -> None:
    # YAML reads a bare off as false: it means off all the same.
    assert parse(text).memory == memory


def test_memory_is_only_on_or_off() -> None:
    with pytest.raises(BadInput, match=r"memory: Input should be 'on' or 'off'"):
        parse("memory: sometimes\n")
