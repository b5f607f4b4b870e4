"""Goals: a goal decomposed by the fake model server into a plan, approved into a run with that
graph, followed to its end; a planner that cannot plan leaves the goal failed, saying why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from telecoder import goals
from telecoder.domain import FailureKind, RunKind, SessionStatus
from telecoder.errors import BadInput, Conflict
from telecoder.planner import ModelPlanner, load_plan
from telecoder.server.state import default_intake
from telecoder.settings import Settings
from telecoder.store import GoalStatus, Outcome, Store
from tests.conftest import make_repo
from tests.fakes.model_server import FakeModelServer, Reply


def plan_reply(*tasks: dict[str, Any]) -> str:
    full = [{"repo": None, "depends_on": [], "acceptance": "", "engine": None, **t} for t in tasks]
    return json.dumps({"tasks": full})


THREE = plan_reply(
    {"id": "api", "prompt": "echo api >> API.md", "repo": "app", "acceptance": "API.md exists"},
    {"id": "client", "prompt": "echo client >> CLIENT.md", "repo": "web", "depends_on": ["api"]},
    {"id": "docs", "prompt": "echo docs >> README.md", "repo": "app"},
)


def planner(server: FakeModelServer) -> ModelPlanner:
    return ModelPlanner(model="planner", base_url=f"{server.url}/v1")


async def finish(store: Store, session_id: str, status: SessionStatus) -> None:
    claimed = await store.queue.claim("w", only=session_id)
    assert claimed is not None, session_id
    failure = FailureKind.ENGINE_ERROR if status == SessionStatus.FAILED else None
    outcome = Outcome(status=status, failure_kind=failure, retryable=False)
    await store.queue.finish(claimed.lease, outcome)


async def test_a_goal_planned_in_three_tasks_becomes_a_run_with_that_graph(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    app, web = make_repo(tmp_path, "app"), make_repo(tmp_path, "web")
    await store.repos.add("app", str(app.path), engine="shell", priority=0)
    await store.repos.add("web", str(web.path), engine="shell", priority=0)
    with FakeModelServer(default=[Reply(text=THREE)]) as server:
        goal = await goals.add(store, planner(server), "Add an API and a client for it")
        body = server.model_requests()[0].body
    assert goal.status == GoalStatus.PROPOSED, goal.error
    assert [t["id"] for t in goal.plan["tasks"]] == ["api", "client", "docs"]  # type: ignore[index]
    assert body["response_format"]["json_schema"]["name"] == "plan"
    assert "Add an API and a client for it" in body["messages"][1]["content"]

    approved, run = await goals.approve(store, default_intake(settings), goal.id)
    assert approved.status == GoalStatus.RUNNING
    assert (approved.run_id, run.kind, run.spec["goal"]) == (run.id, RunKind.PLAN, goal.id)
    sessions = {s.task_key: s for s in await store.runs.sessions(run.id)}
    assert set(sessions) == {"api", "client", "docs"}
    assert sessions["api"].repo == str(app.path)
    assert sessions["client"].repo == str(web.path)
    assert sessions["api"].prompt == "echo api >> API.md\n\nAcceptance: API.md exists"
    assert {k: s.status for k, s in sessions.items()} == {
        "api": SessionStatus.QUEUED,
        "client": SessionStatus.WAITING,
        "docs": SessionStatus.QUEUED,
    }
    deps = await store.runs.dependencies(run.id)
    assert [(d.session_id, d.depends_on) for d in deps] == [
        (sessions["client"].id, sessions["api"].id)
    ]
    with pytest.raises(Conflict):  # approved once only
        await goals.approve(store, default_intake(settings), goal.id)

    for key in ("api", "docs", "client"):
        await finish(store, sessions[key].id, SessionStatus.SUCCEEDED)
    assert (await store.goals.get(goal.id)).status == GoalStatus.DONE
    assert [g.id for g in await store.goals.list()] == [goal.id]


async def test_a_failed_run_fails_its_goal(store: Store, settings: Settings, git_repo) -> None:
    reply = plan_reply({"id": "t1", "prompt": "echo x >> README.md"})
    with FakeModelServer(default=[Reply(text=reply)]) as server:
        goal = await goals.add(store, planner(server), "Touch it", repo=str(git_repo.path))
    _, run = await goals.approve(store, default_intake(settings), goal.id)
    (only,) = await store.runs.sessions(run.id)
    assert only.repo == str(git_repo.path)
    await finish(store, only.id, SessionStatus.FAILED)
    found = await store.goals.get(goal.id)
    assert (found.status, found.run_status) == (GoalStatus.FAILED, "failed")


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("I would start with the API, then the client.", "it holds no JSON object"),
        (plan_reply({"id": "a", "prompt": "x", "depends_on": ["a"]}), "depends on itself"),
        (plan_reply({"id": "a", "prompt": "x", "repo": "nosuch"}), "not a registered repository"),
    ],
)
async def test_unusable_planner_output_fails_the_goal_saying_why(
    store: Store, settings: Settings, reply: str, why: str
) -> None:
    with FakeModelServer(default=[Reply(text=reply)]) as server:
        goal = await goals.add(store, planner(server), "Do the thing", repo="/somewhere")
        asked = len(server.model_requests())
    assert goal.status == GoalStatus.FAILED
    assert goal.error is not None
    assert goal.error.startswith("the planner's reply was not a valid plan")
    assert why in goal.error
    assert asked == 2  # asked again once, with what was wrong
    assert goal.plan is None
    with pytest.raises(Conflict):  # nothing to approve
        await goals.approve(store, default_intake(settings), goal.id)


async def test_a_person_approves_an_edited_plan_and_drops_another_goal(
    store: Store, settings: Settings, git_repo
) -> None:
    goal = await goals.add(store, None, "Fix the typo", repo=str(git_repo.path))
    assert (goal.status, goal.error) == (GoalStatus.FAILED, goals.NO_PLANNER)
    edited = load_plan(
        "tasks:\n  - id: a\n    prompt: echo a >> README.md\n"
        "  - id: b\n    prompt: echo b >> README.md\n    depends_on: [a]\n"
    )
    approved, run = await goals.approve(store, default_intake(settings), goal.id, edited)
    assert approved.status == GoalStatus.RUNNING
    assert [t["id"] for t in approved.plan["tasks"]] == ["a", "b"]  # type: ignore[index]
    assert len(await store.runs.dependencies(run.id)) == 1

    other = await goals.add(store, None, "Never mind")
    assert (await store.goals.drop(other.id)).status == GoalStatus.DROPPED
    with pytest.raises(Conflict):
        await store.goals.drop(goal.id)  # running: cancel its run instead


async def test_a_task_intake_refuses_puts_the_goal_back_to_proposed(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    reply = plan_reply({"id": "t1", "prompt": "x", "repo": str(tmp_path / "not-a-repo")})
    with FakeModelServer(default=[Reply(text=reply)]) as server:
        given = str(tmp_path / "not-a-repo")
        goal = await goals.add(store, planner(server), "Do it", repo=given)
    assert goal.status == GoalStatus.PROPOSED
    with pytest.raises(BadInput, match="task t1"):
        await goals.approve(store, default_intake(settings), goal.id)
    back = await store.goals.get(goal.id)
    assert back.status == GoalStatus.PROPOSED
    assert back.error is not None
    assert "task t1" in back.error
    assert await store.runs.list() == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("tasks: []", "at least 1"),
        ("tasks:\n  - {id: a, prompt: x, depends_on: [b]}", "no task of the plan"),
        (
            "tasks:\n  - {id: a, prompt: x, depends_on: [b]}\n"
            "  - {id: b, prompt: y, depends_on: [a]}",
            "cycle",
        ),
        ("tasks:\n  - {id: a, prompt: x, colour: red}", "colour"),
        ("[oops", "not YAML"),
    ],
)
def test_a_bad_plan_file_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(BadInput, match=why):
        load_plan(text)
