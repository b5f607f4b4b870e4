"""Budgets through the real ``telecoder`` command: --budget and --max-time on run, a partial
result on timeout, ``telecoder budget`` resuming a session blocked on its budget (Claude Code
through the gateway), ``telecoder budgets``, and a period budget holding a new session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import cli_env, events_json, session_json, telecoder
from tests.conftest import GitRepo
from tests.engine_cases import PROMPT, agent_env
from tests.fakes.model_server import FakeModelServer, Reply


def run_json(repo: GitRepo, prompt: str, env: dict[str, str], *more: str) -> tuple[int, dict]:
    done = telecoder("run", prompt, "--repo", str(repo.path), "--json", *more, env=env, timeout=240)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_run_with_a_time_limit_and_a_budget_ends_with_a_partial_result(
    git_repo: GitRepo, home: Path
) -> None:
    env = cli_env(home, TELECODER_KILL_GRACE_SECONDS="1")
    code, session = run_json(
        git_repo, "echo x > x.txt && sleep 30", env, "--max-time", "2s", "--budget", "$0.50"
    )
    assert code == 1
    assert (session["status"], session["failure_kind"]) == ("failed", "timeout")
    assert (session["budget_usd"], session["timeout_seconds"]) == (0.5, 2)
    assert session["result"]["partial"] is True
    assert git_repo.remote_git("show", f"{session['branch']}:x.txt") == "x"
    shown = telecoder("show", session["id"], env=env)
    assert "budget        $0.50 (spent $0.00)" in shown.stdout
    assert "time limit    2s" in shown.stdout
    assert "partial       yes" in shown.stdout
    listed = json.loads(telecoder("list", "--json", env=env).stdout)["sessions"]
    assert (listed[0]["budget_usd"], listed[0]["cost_usd"]) == (0.5, 0.0)
    plain = telecoder("run", "echo y > y.txt && sleep 30", "--repo", str(git_repo.path),
                      "--max-time", "1s", env=env, timeout=60)  # fmt: skip
    assert plain.returncode == 1
    assert "partial result pushed to" in plain.stdout
    for bad in (
        ["--budget", "lots"],
        ["--max-time", "soon"],
        ["--max-time", "1m", "--timeout", "9"],
    ):
        refused = telecoder("run", "true", "--repo", str(git_repo.path), *bad, env=env)
        assert refused.returncode == 2, refused.stderr
    assert "both set the time limit" in refused.stderr


def test_budget_raises_a_queued_session_and_refuses_what_it_cannot(
    git_repo: GitRepo, home: Path
) -> None:
    env = cli_env(home)
    made = telecoder("run", "true", "--repo", str(git_repo.path), "--detach", env=env)
    session_id = made.stdout.strip()
    raised = telecoder("budget", session_id, "+1.00", env=env)
    assert raised.returncode == 0, raised.stderr
    assert raised.stdout.strip() == f"{session_id}: budget $1.00"
    again = json.loads(telecoder("budget", session_id, "5", "--json", env=env).stdout)
    assert (again["budget_usd"], again["status"]) == (5.0, "queued")
    assert telecoder("budget", session_id, "more", env=env).returncode == 2
    assert telecoder("budget", "nosuchsession", "+1", env=env).returncode == 3
    telecoder("cancel", session_id, env=env)
    ended = telecoder("budget", session_id, "+1", env=env)
    assert ended.returncode == 4
    assert "has ended" in ended.stderr


def test_period_budgets_and_a_new_session_held_by_one(git_repo: GitRepo, home: Path) -> None:
    env = cli_env(home, TELECODER_BUDGET_MONTHLY_USD="50")
    listed = json.loads(telecoder("budgets", "list", "--json", env=env).stdout)
    assert [(b["scope"], b["period"], b["source"]) for b in listed] == [
        ("global", "monthly", "settings")
    ]
    done = telecoder("budgets", "set", "--period", "daily", "--usd", "0", "--json", env=env)
    assert done.returncode == 0, done.stderr
    daily = next(b for b in json.loads(done.stdout) if b["period"] == "daily")
    assert (daily["limit_usd"], daily["reached"]) == (0.0, True)
    table = telecoder("budgets", "list", env=env).stdout
    assert "reached: new sessions wait" in table
    held = telecoder("run", "true", "--repo", str(git_repo.path), env=env)
    assert held.returncode == 0, held.stderr
    assert "waiting: daily budget reached ($0.00 of $0.00)" in held.stderr
    session = session_json(held.stdout.strip(), env)
    assert (session["status"], session["attempt"]) == ("queued", 0)
    assert session["error"] == "waiting: daily budget reached ($0.00 of $0.00)"
    assert events_json(session["id"], env)[-1]["data"] == {
        "status": "queued",
        "reason": "waiting: daily budget reached ($0.00 of $0.00)",
    }
    assert telecoder("budgets", "remove", "--period", "daily", env=env).returncode == 0
    assert session_json(session["id"], env)["error"] is None
    missing = telecoder("budgets", "remove", "--period", "daily", env=env)
    assert missing.returncode == 3
    assert telecoder("budgets", "set", "--period", "weekly", "--usd", "1", env=env).returncode == 2
    user = telecoder("budgets", "set", "--period", "daily", "--usd", "3", "--user", "bob", env=env)
    assert "user:bob" in user.stdout


RESUMED = "The budget was raised to"


@pytest.mark.usefixtures("agent_tools")
def test_a_session_blocked_on_its_budget_is_resumed_by_telecoder_budget(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    script = (Reply(text="Resuming.", command="echo done > resumed.txt"), Reply(text="Resumed."))
    with FakeModelServer(scripts={RESUMED: script}) as server:
        env = agent_env(tmp_path / "agent-home", server.url)
        code, blocked = run_json(
            git_repo, PROMPT, env, "--engine", "claude-code", "--model", "claude-sonnet-4-5",
            "--budget", "0",
        )  # fmt: skip
        assert code == 0
        assert (blocked["status"], blocked["failure_kind"]) == ("blocked", "budget_reached")
        assert blocked["error"] == "budget reached: $0.00 of $0.00 — raise it or stop"
        human = telecoder("show", blocked["id"], env=env)
        assert "budget reached: $0.00 of $0.00" in human.stdout
        resumed = telecoder("budget", blocked["id"], "+1.00", env=env, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        assert "succeeded" in resumed.stdout
    final = session_json(blocked["id"], env)
    assert (final["status"], final["budget_usd"]) == ("succeeded", 1.0)
    assert git_repo.remote_git("show", f"{final['branch']}:resumed.txt") == "done"
