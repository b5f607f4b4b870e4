"""``telecoder goals`` as a user runs it (locally and ``--server``), and ``/api/goals``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_goals import plan_reply
from tests.server import client, serving

TWO = plan_reply(
    {"id": "t1", "prompt": "echo one >> README.md"},
    {"id": "t2", "prompt": "echo two >> README.md", "depends_on": ["t1"]},
)


def test_cli_goals_locally(tmp_path: Path, git_repo) -> None:
    with FakeModelServer(default=[Reply(text=TWO)]) as server:
        env = cli_env(
            tmp_path / "home",
            TELECODER_PLANNER_MODEL="planner",
            TELECODER_PLANNER_BASE_URL=f"{server.url}/v1",
        )
        added = telecoder("goals", "add", "Say it twice", "--repo", str(git_repo.path), "--json",
                          env=env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    goal = json.loads(added.stdout)
    assert (goal["status"], [t["id"] for t in goal["plan"]["tasks"]]) == ("proposed", ["t1", "t2"])

    shown = telecoder("goals", "show", goal["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "t2" in shown.stdout
    assert "after t1" in shown.stdout
    assert f"telecoder goals approve {goal['id']}" in shown.stdout

    approved = telecoder("goals", "approve", goal["id"], "--json", env=env)
    assert approved.returncode == 0, approved.stderr
    running = json.loads(approved.stdout)
    assert (running["status"], running["run_status"]) == ("running", "running")
    assert telecoder("goals", "approve", goal["id"], env=env).returncode == 4  # again: conflict
    assert telecoder("goals", "drop", goal["id"], env=env).returncode == 4  # it runs

    # No planner: the goal fails saying so; a person's plan file runs it.
    bare = cli_env(tmp_path / "home")
    failed = telecoder("goals", "add", "Fix the typo", "--repo", str(git_repo.path), env=bare)
    assert failed.returncode == 1
    assert "TELECODER_PLANNER_MODEL" in failed.stderr
    listed = json.loads(telecoder("goals", "list", "--json", env=bare).stdout)["goals"]
    assert [g["status"] for g in listed] == ["failed", "running"]
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  - id: fix\n    prompt: echo fixed >> README.md\n")
    edited = telecoder("goals", "approve", listed[0]["id"], "--edit", str(plan), "--json", env=bare)
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["plan"]["tasks"][0]["id"] == "fix"
    plan.write_text("tasks:\n  - id: a\n    prompt: x\n    depends_on: [a]\n")
    bad = telecoder("goals", "approve", listed[0]["id"], "--edit", str(plan), env=bare)
    assert (bad.returncode, "depends on itself" in bad.stderr) == (2, True)
    assert telecoder("goals", "show", "goal_nosuchgoal", env=bare).returncode == 3
    other = telecoder("goals", "add", "Not now", "--repo", str(git_repo.path), "--json", env=bare)
    dropped = telecoder("goals", "drop", json.loads(other.stdout)["id"], "--json", env=bare)
    assert json.loads(dropped.stdout)["status"] == "dropped"


async def test_api_goals(settings: Settings, store: Store, git_repo) -> None:
    with FakeModelServer(default=[Reply(text=TWO)]) as server:
        configured = settings.model_copy(
            update={"planner_model": "planner", "planner_base_url": f"{server.url}/v1"}
        )
        async with client(create_app(configured, store)) as c:
            made = await c.post("/api/goals", json={"text": "Twice", "repo": str(git_repo.path)})
            assert made.status_code == 201, made.text
            goal = made.json()
            assert goal["status"] == "proposed"
            assert (await c.get(f"/api/goals/{goal['id']}")).json()["plan"] == goal["plan"]
            listed = (await c.get("/api/goals")).json()
            assert [g["id"] for g in listed["goals"]] == [goal["id"]]
            bad_plan = {"plan": {"tasks": [{"id": "a", "prompt": "x", "depends_on": ["zz"]}]}}
            refused = await c.post(f"/api/goals/{goal['id']}/approve", json=bad_plan)
            assert refused.status_code == 422
            ok = await c.post(f"/api/goals/{goal['id']}/approve")
            assert (ok.status_code, ok.json()["status"]) == (200, "running")
            again = await c.post(f"/api/goals/{goal['id']}/approve")
            assert (again.status_code, again.json()["error"]) == (409, "conflict")
            assert (await c.post(f"/api/goals/{goal['id']}/drop")).status_code == 409
            missing = await c.get("/api/goals/goal_nosuchgoal")
            assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
            empty = await c.post("/api/goals", json={"text": ""})
            assert empty.status_code == 422
            schema = (await c.get("/openapi.json")).json()
            assert "409" in schema["paths"]["/api/goals/{goal_id}/approve"]["post"]["responses"]
    run = await store.runs.get(ok.json()["run_id"])
    assert run.spec["goal"] == goal["id"]


async def test_cli_goals_against_a_server(settings, store, git_repo, tmp_path) -> None:
    env = cli_env(tmp_path / "client-home")
    with FakeModelServer(default=[Reply(text=TWO)]) as server:
        configured = settings.model_copy(
            update={"planner_model": "planner", "planner_base_url": f"{server.url}/v1"}
        )
        async with serving(create_app(configured, store)) as url:

            def run(*args: str):  # type: ignore[no-untyped-def]
                return telecoder("goals", *args, "--server", url, env=env)

            added = await asyncio.to_thread(run, "add", "Twice", "--repo", str(git_repo.path),
                                            "--json")  # fmt: skip
            assert added.returncode == 0, added.stderr
            goal = json.loads(added.stdout)
            assert goal["repo"] == str(git_repo.path.resolve())
            listed = await asyncio.to_thread(run, "list", "--json")
            assert [g["id"] for g in json.loads(listed.stdout)["goals"]] == [goal["id"]]
            approved = await asyncio.to_thread(run, "approve", goal["id"], "--json")
            assert json.loads(approved.stdout)["status"] == "running", approved.stderr
            assert (await asyncio.to_thread(run, "approve", goal["id"])).returncode == 4
            assert (await asyncio.to_thread(run, "show", "goal_nosuchgoal")).returncode == 3
    found = await store.goals.get(goal["id"])
    assert len(await store.runs.sessions(found.run_id or "")) == 2
