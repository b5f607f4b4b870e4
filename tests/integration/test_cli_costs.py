"""``telecoder costs`` and ``telecoder run --estimate`` as a user runs them: on the local database
(SQLite and PostgreSQL) and against a server (``--server``), with the same output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder.server import create_app
from telecoder.store import By
from telecoder.timerange import parse_range
from tests.cli import cli_env, telecoder
from tests.server import serving
from tests.usage_rows import finished, seed

TOKEN = "cli-costs-token-0123456789"
RANGE = ["--since", "2026-11-20", "--until", "2026-11-22"]


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    home = tmp_path / "cli-home"
    home.mkdir()
    return cli_env(home, TELECODER_DATABASE_URL=db_url)


async def cli(*args: str, env: dict[str, str]):
    """The command in a thread: a server of this event loop may have to answer it."""
    return await asyncio.to_thread(telecoder, *args, env=env)


async def test_costs_prints_totals_groups_and_top_sessions(store, env):
    ids = await seed(store)
    done = await cli("costs", *RANGE, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("$0.53 +1? · 5 requests · 7,400 in / 740 out tokens")
    assert lines[0].endswith("since 2026-11-20 00:00 UTC until 2026-11-23 00:00 UTC")
    assert "1 request to models without a known price (local-llm)" in lines[1]
    table = [line.split() for line in lines[3:7]]
    assert table[0] == ["MODEL", "REQUESTS", "INPUT", "CACHE", "OUTPUT", "COST"]
    assert table[1] == ["gpt-5", "1", "100", "0", "10", "$0.50"]
    assert table[2] == ["claude-sonnet-4-5", "3", "300", "1,050", "30", "$0.03"]
    assert table[3] == ["local-llm", "1", "7,000", "0", "700", "$0.00", "+1?"]
    assert any(line.startswith(ids["b"]) and "write the docs" in line for line in lines)
    without = await cli("costs", *RANGE, "--top", "0", env=env)
    assert "TOP SESSION" in done.stdout
    assert "TOP SESSION" not in without.stdout
    assert without.stdout.splitlines()[:7] == lines[:7]


async def test_costs_json_is_the_report(store, env):
    await seed(store)
    done = await cli("costs", "--by", "day", *RANGE, "--json", env=env)
    assert done.returncode == 0, done.stderr
    since, until = parse_range("2026-11-20", "2026-11-22")
    expected = await store.costs.report(by=By.DAY, since=since, until=until, top=5, limit=50)
    assert json.loads(done.stdout) == expected.to_dict()
    assert [g["key"] for g in json.loads(done.stdout)["groups"]] == [
        "2026-11-20",
        "2026-11-21",
        "2026-11-22",
    ]


async def test_costs_with_nothing_recorded(store, env):
    done = await cli("costs", "--since", "7d", env=env)
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.startswith("no model requests since ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "colour"], "error: unknown --by 'colour' (known: model, engine, repo, user"),
        (["--since", "last week"], "error: since: 'last week' is not a time: give 30m, 24h"),
        (["--since", "2d", "--until", "3d"], "error: since (2d) must be before until (3d)"),
    ],
)
async def test_bad_input_exits_2_saying_what_is_wrong(store, env, args, message):
    done = await cli("costs", *args, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith(message)


async def test_costs_from_a_server_print_the_same(settings, store, env):
    await seed(store)
    local_json = await cli("costs", "--by", "user", *RANGE, "--json", env=env)
    local_text = await cli("costs", "--by", "user", *RANGE, env=env)
    secured = settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")})
    remote_env = {**env, "TELECODER_DATABASE_URL": "sqlite:////nonexistent/x.db"}
    async with serving(create_app(secured, store)) as url:
        args = ["costs", "--by", "user", *RANGE, "--server", url]
        as_json = await cli(*args, "--json", env={**remote_env, "TELECODER_TOKEN": TOKEN})
        as_text = await cli(*args, env={**remote_env, "TELECODER_TOKEN": TOKEN})
        refused = await cli(*args, env={**remote_env, "TELECODER_TOKEN": "wrong"})
        bad = await cli(*args, "--since", "7x", env={**remote_env, "TELECODER_TOKEN": TOKEN})
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads(local_json.stdout)
    assert as_text.stdout == local_text.stdout
    assert refused.returncode == 7
    assert bad.returncode == 2


# --- run --estimate ---------------------------------------------------------------------------


async def test_run_estimate_prints_an_estimate_and_runs_nothing(store, env, git_repo):
    repo = str(git_repo.path)
    for cost in (0.1, 0.25, 0.4):
        await finished(store, "fix the flaky login test", cost, repo=repo)
    before = len((await store.sessions.list()).sessions)
    args = ["run", "fix the flaky test", "--repo", repo, "--engine", "claude-code", "--estimate"]
    done = await cli(*args, env=env)
    as_json = await cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "estimate: $0.25 (median; $0.10 – $0.40) for claude-code, from 3 sessions: "
        "same engine, similar prompts · ~110 tokens"
    )
    data = json.loads(as_json.stdout)
    assert (data["repo"], data["based_on"], data["median_usd"]) == (repo, 3, 0.25)
    assert len((await store.sessions.list()).sessions) == before  # nothing was queued


async def test_run_estimate_with_no_history_and_with_bad_input(store, env, git_repo):
    repo = str(git_repo.path)
    none = await cli("run", "x", "--repo", repo, "--engine", "codex", "--estimate", env=env)
    gone = await cli("run", "x", "--repo", "/no/such/repo", "--estimate", env=env)
    engine = await cli("run", "x", "--repo", repo, "--engine", "nope", "--estimate", env=env)
    assert none.returncode == 0, none.stderr
    assert (
        none.stdout.strip() == f"no history: no finished session of {repo} to estimate codex from"
    )
    assert (gone.returncode, gone.stderr.strip()) == (
        2,
        "error: repository /no/such/repo does not exist",
    )
    assert engine.returncode == 2
    assert engine.stderr.startswith("error: unknown engine 'nope'")
    assert (await store.sessions.list()).sessions == []


async def test_run_estimate_from_a_server(settings, store, env, git_repo):
    repo = str(git_repo.path)
    for cost in (1.0, 3.0):
        await finished(store, "upgrade the parser", cost, repo=repo, model="big")
    local = await cli(
        "run",
        "upgrade the parser",
        "--repo",
        repo,
        "-m",
        "big",
        "--estimate",
        "--engine",
        "claude-code",
        "--json",
        env=env,
    )
    async with serving(create_app(settings, store)) as url:
        remote = await cli(
            "run",
            "upgrade the parser",
            "--repo",
            repo,
            "-m",
            "big",
            "--estimate",
            "--engine",
            "claude-code",
            "--json",
            "--server",
            url,
            env=env,
        )
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert json.loads(remote.stdout)["basis"] == (
        "same engine and model, any prompt (too few similar ones)"
    )
