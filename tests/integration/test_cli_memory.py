"""``telecoder memory`` as a user runs it: real processes on a SQLite file or PostgreSQL, real git
repositories to name, the registry's names; ``--json`` and the tables, and the exit codes."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from telecoder.embedders import WORDLLAMA_NAME
from tests.cli import cli_env, telecoder
from tests.conftest import PG_ADMIN_URL, make_repo
from tests.integration.test_cli_inbox import error_of

SECRET = "sk-memory-cli-secret-0123456789abcdef"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def any_env(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[dict[str, str]]:
    """SQLite and PostgreSQL, for the life of a memory; the rest (how names resolve, what is
    refused: the CLI's part, the same on both) runs on SQLite, since every command is a
    process of its own."""
    home: Path = tmp_path_factory.mktemp("memory-home")
    secret = {"OPENAI_API_KEY": SECRET}  # a secret the masker knows
    if request.param == "sqlite":
        yield cli_env(home, TELECODER_DATABASE_URL=f"sqlite:///{home / 'telecoder.db'}", **secret)
        return
    template = request.getfixturevalue("pg_template")
    name = f"telecoder_memory_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield cli_env(home, TELECODER_DATABASE_URL=url, **secret)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home: Path = tmp_path_factory.mktemp("memory-home")
    url = f"sqlite:///{home / 'telecoder.db'}"
    # Full-text only: no process here loads the embedding model (the life test above does).
    return cli_env(
        home,
        TELECODER_DATABASE_URL=url,
        OPENAI_API_KEY=SECRET,
        TELECODER_MEMORY_EMBEDDER="none",
    )


def memory(env: dict[str, str], *args: str, cwd: Path | None = None):
    return telecoder("memory", *args, env=env, cwd=cwd)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def test_add_list_show_forget_in_json_and_tables(any_env, tmp_path):
    env = any_env
    repo = make_repo(tmp_path).path
    added = ok(memory(env, "add", str(repo), f"Run make proto first; key {SECRET}", "--json"))
    assert added["repo"] == str(repo)  # as sessions name it: the absolute top level
    assert added["kind"] == "note"
    assert added["embedder"] == WORDLLAMA_NAME  # remembered as sessions are: embedded
    assert SECRET not in added["text"]
    assert "***" in added["text"]
    lesson = ok(memory(env, "add", str(repo), "Tests need TZ=UTC", "--kind", "lesson", "--json"))
    listed = ok(memory(env, "list", str(repo), "--json"))
    assert [m["id"] for m in listed] == [lesson["id"], added["id"]]  # newest first
    assert listed[1] == added
    assert [m["id"] for m in ok(memory(env, "list", str(repo), "--kind", "lesson", "--json"))] == [
        lesson["id"]
    ]
    assert ok(memory(env, "list", str(repo), "--limit", "1", "--json")) == [listed[0]]
    assert ok(memory(env, "show", str(added["id"]), "--json")) == added
    counts = ok(memory(env, "list", "--json"))
    assert {"repo": str(repo), "memories": 2} in counts["repos"]

    table = memory(env, "list", str(repo))
    assert table.returncode == 0
    assert "Tests need TZ=UTC" in table.stdout
    assert "lesson" in table.stdout
    shown = memory(env, "show", str(lesson["id"]))
    assert "Tests need TZ=UTC" in shown.stdout
    assert str(repo) in shown.stdout
    repos = memory(env, "list")
    assert str(repo) in repos.stdout

    gone = ok(memory(env, "forget", str(added["id"]), "--json"))
    assert gone == added
    message = error_of(memory(env, "show", str(added["id"]), "--json"), "not_found")
    assert message == f"no memory {added['id']}"
    assert [m["id"] for m in ok(memory(env, "list", str(repo), "--json"))] == [lesson["id"]]
    said = memory(env, "forget", str(lesson["id"]))
    assert said.returncode == 0
    assert f"forgot memory {lesson['id']}" in said.stdout


def test_a_repository_is_named_as_sessions_name_it(env, tmp_path):
    repo = make_repo(tmp_path).path
    (repo / "src").mkdir()
    name = f"app{uuid.uuid4().hex[:6]}"
    registered = telecoder("repos", "add", name, str(repo), "--json", env=env)
    assert registered.returncode == 0, registered.stderr
    added = ok(memory(env, "add", ".", "Lint with ruff", "--json", cwd=repo / "src"))
    assert added["repo"] == str(repo)
    by_dot = ok(memory(env, "list", ".", "--json", cwd=repo))
    by_name = ok(memory(env, "list", name, "--json"))
    by_path = ok(memory(env, "list", str(repo / "src"), "--json"))
    assert by_dot == by_name == by_path == [added]
    github = ok(memory(env, "add", "acme/widgets", "Widgets use tabs", "--json"))
    assert github["repo"] == "https://github.com/acme/widgets.git"
    assert ok(memory(env, "list", "https://github.com/acme/widgets.git", "--json")) == [github]


def test_a_users_facts(env):
    user = f"telegram:{uuid.uuid4().int % 10**9}"
    fact = ok(
        memory(env, "add", "--user", user, "Prefers short answers", "--kind", "fact", "--json")
    )
    assert (fact["repo"], fact["user"], fact["kind"]) == (None, user, "fact")
    assert ok(memory(env, "list", "--user", user, "--json")) == [fact]
    assert {"user": user, "memories": 1} in ok(memory(env, "list", "--json"))["users"]
    assert f"user {user}" in memory(env, "list").stdout


def test_bad_input_is_exit_2_and_a_missing_memory_exit_3(env, tmp_path):
    repo = str(make_repo(tmp_path).path)
    assert "text" in error_of(memory(env, "add", repo, "   ", "--json"), "bad_input")
    assert "REPO TEXT" in error_of(memory(env, "add", "only text", "--json"), "bad_input")
    assert "kind" in error_of(
        memory(env, "add", repo, "x", "--kind", "session", "--json"), "bad_input"
    )
    assert "kind" in error_of(memory(env, "list", repo, "--kind", "nope", "--json"), "bad_input")
    unknown = error_of(memory(env, "list", "no-such-name", "--json"), "bad_input")
    assert "registered" in unknown
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not a git repository" in error_of(
        memory(env, "list", str(plain), "--json"), "bad_input"
    )
    assert "credential" in error_of(
        memory(env, "list", "https://user:pw@example.com/r.git", "--json"), "bad_input"
    )
    error_of(memory(env, "show", "987654", "--json"), "not_found")
    error_of(memory(env, "forget", "987654", "--json"), "not_found")
    missing = memory(env, "forget", "987654")
    assert missing.returncode == 3
    assert "no memory 987654" in missing.stderr
    assert missing.stdout == ""
