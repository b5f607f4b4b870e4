"""Members see and act on their own only — sessions, runs, best-of runs, goals, cron jobs — over
the API and the dashboard: someone else's is 404 (its id is not confirmed), an admin sees and
acts on everything, a viewer sees everything and may change nothing (403). Issue 17, item 5,
over the app on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from telecoder.domain import SessionStatus
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Outcome, Store
from telecoder.store.usage import UsageRow
from tests.conftest import GitRepo
from tests.server import FakeRun, client

ADMIN = "ops-admin-token-0123456789"
HTML = {"accept": "text/html"}


@dataclass
class People:
    alice: dict[str, str]  # member
    bob: dict[str, str]  # member
    val: dict[str, str]  # viewer
    ops: dict[str, str]  # admin (the env token)
    alice_token: str


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def people(store: Store) -> People:
    for name, role in (("alice", "member"), ("bob", "member"), ("val", "viewer")):
        await store.users.add(name, role)
    _, alice = await store.users.create_token("alice")
    _, bob = await store.users.create_token("bob")
    _, val = await store.users.create_token("val")
    return People(bearer(alice), bearer(bob), bearer(val), bearer(ADMIN), alice)


@pytest.fixture
def app(settings: Settings, store: Store) -> Any:
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{ADMIN}")}), store)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def fan_out(c: httpx.AsyncClient, repo: GitRepo, who: dict[str, str]) -> dict[str, Any]:
    body = {"repos": [str(repo.path)], "prompt": "echo hi", "engine": "shell"}
    return ok(await c.post("/api/runs", json=body, headers=who), 201)  # type: ignore[no-any-return]


async def statuses(c: httpx.AsyncClient, calls: list[tuple[str, str]], who: dict[str, str]) -> Any:
    return {(m, p): (await c.request(m, p, headers=who)).status_code for m, p in calls}


async def test_runs_are_their_makers_own(app: Any, people: People, git_repo: GitRepo) -> None:
    async with client(app) as c:
        mine = await fan_out(c, git_repo, people.alice)
        theirs = await fan_out(c, git_repo, people.bob)
        bob_session = theirs["sessions"][0]["id"]
        listed = {
            who: {r["id"] for r in ok(await c.get("/api/runs", headers=h))}
            for who, h in (("alice", people.alice), ("ops", people.ops), ("val", people.val))
        }
        on_theirs = [
            ("GET", f"/api/runs/{theirs['id']}"),
            ("GET", f"/api/runs/{theirs['id']}/compare"),
            ("GET", f"/api/runs/{theirs['id']}/tally"),
            ("POST", f"/api/runs/{theirs['id']}/cancel"),
            ("POST", f"/api/runs/{theirs['id']}/retry-failed"),
            ("GET", f"/api/sessions/{bob_session}"),
        ]
        alice_on_theirs = await statuses(c, on_theirs, people.alice)
        after = {"after": bob_session, "repo": str(git_repo.path), "prompt": "echo next"}
        alice_after_theirs = await c.post("/api/runs", json=after, headers=people.alice)
        alice_sessions = ok(await c.get("/api/sessions", headers=people.alice))["sessions"]
        own = ok(await c.get(f"/api/runs/{mine['id']}", headers=people.alice))
        own_cancel = ok(await c.post(f"/api/runs/{mine['id']}/cancel", headers=people.alice))
        viewer_reads = await c.get(f"/api/runs/{theirs['id']}", headers=people.val)
        viewer_cancels = await c.post(f"/api/runs/{theirs['id']}/cancel", headers=people.val)
        viewer_makes = await c.post(
            "/api/runs", json={"repos": [str(git_repo.path)], "prompt": "x"}, headers=people.val
        )
        admin_cancels = await c.post(f"/api/runs/{theirs['id']}/cancel", headers=people.ops)
    assert listed == {
        "alice": {mine["id"]},
        "ops": {mine["id"], theirs["id"]},
        "val": {mine["id"], theirs["id"]},
    }
    assert set(alice_on_theirs.values()) == {404}, alice_on_theirs
    assert alice_after_theirs.status_code == 404, alice_after_theirs.text
    assert (mine["user"], theirs["user"]) == ("alice", "bob")
    assert {s["id"] for s in alice_sessions} == {s["id"] for s in mine["sessions"]}
    assert {s["user"] for s in own["sessions"]} == {"alice"}
    assert own_cancel["status"] == "cancelled"
    assert viewer_reads.status_code == 200
    assert viewer_cancels.status_code == viewer_makes.status_code == 403
    assert ok(admin_cancels)["status"] == "cancelled"


async def test_a_members_follow_up_after_their_own_session_stays_theirs(
    app: Any, people: People, git_repo: GitRepo
) -> None:
    async with client(app) as c:
        first = await fan_out(c, git_repo, people.alice)
        after = {
            "after": first["sessions"][0]["id"],
            "repo": str(git_repo.path),
            "prompt": "echo next",
            "engine": "shell",
        }
        made = ok(await c.post("/api/runs", json=after, headers=people.alice), 201)
        bob_sees = await c.get(f"/api/runs/{made['id']}", headers=people.bob)
    assert made["id"] == first["id"]  # it joined the run of the session it waits for
    assert [s["user"] for s in made["sessions"]] == ["alice", "alice"]
    assert bob_sees.status_code == 404


async def test_best_of_runs_are_their_makers_own(
    app: Any, people: People, git_repo: GitRepo
) -> None:
    body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell", "attempts": 2}
    async with client(app) as c:
        made = ok(await c.post("/api/runs/best-of", json=body, headers=people.alice), 201)
        run_id = made["run"]["id"]
        pick = {"session_id": made["sessions"][0]["id"]}
        bob = await statuses(
            c, [("GET", f"/api/runs/{run_id}/compare"), ("GET", f"/runs/{run_id}/compare")],
            people.bob,
        )  # fmt: skip
        bob_picks = await c.post(f"/api/runs/{run_id}/pick", json=pick, headers=people.bob)
        alice_compares = await c.get(f"/api/runs/{run_id}/compare", headers=people.alice)
        val_picks = await c.post(f"/api/runs/{run_id}/pick", json=pick, headers=people.val)
    assert made["run"]["user"] == "alice"
    assert {s["user"] for s in made["sessions"]} == {"alice"}
    assert set(bob.values()) == {404}, bob
    assert bob_picks.status_code == 404
    assert len(ok(alice_compares)["candidates"]) == 2
    assert val_picks.status_code == 403


async def test_goals_are_their_authors_own(app: Any, people: People, git_repo: GitRepo) -> None:
    body = {"text": "Make the README friendlier", "repo": str(git_repo.path)}
    async with client(app) as c:
        mine = ok(await c.post("/api/goals", json=body, headers=people.alice), 201)
        theirs = ok(await c.post("/api/goals", json=body, headers=people.bob), 201)
        listed = {
            who: {g["id"] for g in ok(await c.get("/api/goals", headers=h))["goals"]}
            for who, h in (("alice", people.alice), ("ops", people.ops), ("val", people.val))
        }
        alice_on_theirs = await statuses(
            c,
            [
                ("GET", f"/api/goals/{theirs['id']}"),
                ("POST", f"/api/goals/{theirs['id']}/approve"),
                ("POST", f"/api/goals/{theirs['id']}/drop"),
            ],
            people.alice,
        )
        viewer_drops = await c.post(f"/api/goals/{theirs['id']}/drop", headers=people.val)
        viewer_reads = await c.get(f"/api/goals/{theirs['id']}", headers=people.val)
        own_drop = await c.post(f"/api/goals/{mine['id']}/drop", headers=people.alice)
        admin_drops = await c.post(f"/api/goals/{theirs['id']}/drop", headers=people.ops)
    assert (mine["user"], theirs["user"]) == ("alice", "bob")
    assert listed == {
        "alice": {mine["id"]},
        "ops": {mine["id"], theirs["id"]},
        "val": {mine["id"], theirs["id"]},
    }
    assert set(alice_on_theirs.values()) == {404}, alice_on_theirs
    assert viewer_drops.status_code == 403
    assert viewer_reads.status_code == 200
    assert ok(own_drop)["status"] == ok(admin_drops)["status"] == "dropped"


async def test_cron_jobs_are_their_definers_own_and_so_are_their_runs(
    app: Any, people: People, git_repo: GitRepo
) -> None:
    def job(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "schedule": "@daily",
            "repos": [str(git_repo.path)],
            "prompt": "echo tick",
            "engine": "shell",
        }

    async with client(app) as c:
        mine = ok(await c.post("/api/jobs", json=job("alices"), headers=people.alice), 201)
        theirs = ok(await c.post("/api/jobs", json=job("bobs"), headers=people.bob), 201)
        listed = {
            who: {j["name"] for j in ok(await c.get("/api/jobs", headers=h))}
            for who, h in (("alice", people.alice), ("ops", people.ops), ("val", people.val))
        }
        alice_on_theirs = await statuses(
            c,
            [
                ("GET", "/api/jobs/bobs"),
                ("POST", "/api/jobs/bobs/run"),
                ("POST", "/api/jobs/bobs/pause"),
                ("POST", "/api/jobs/bobs/resume"),
                ("DELETE", "/api/jobs/bobs"),
                ("GET", "/api/jobs/nosuch"),
            ],
            people.alice,
        )
        fired = ok(await c.post("/api/jobs/alices/run", headers=people.alice), 201)
        fired_run = ok(await c.get(f"/api/runs/{fired['id']}", headers=people.alice))
        bob_sees_run = await c.get(f"/api/runs/{fired['id']}", headers=people.bob)
        viewer_pauses = await c.post("/api/jobs/bobs/pause", headers=people.val)
        viewer_reads = await c.get("/api/jobs/bobs", headers=people.val)
        admin_pauses = await c.post("/api/jobs/bobs/pause", headers=people.ops)
        page = await c.get("/jobs", headers={**people.alice, **HTML})
        own_delete = await c.delete("/api/jobs/alices", headers=people.alice)
    assert (mine["user"], theirs["user"]) == ("alice", "bob")
    assert listed == {"alice": {"alices"}, "ops": {"alices", "bobs"}, "val": {"alices", "bobs"}}
    assert set(alice_on_theirs.values()) == {404}, alice_on_theirs
    assert fired_run["user"] == "alice"
    assert {s["user"] for s in fired_run["sessions"]} == {"alice"}
    assert bob_sees_run.status_code == 404
    assert viewer_pauses.status_code == 403
    assert viewer_reads.status_code == 200
    assert ok(admin_pauses)["status"] == "paused"
    assert page.status_code == 200
    assert "alices" in page.text
    assert "bobs" not in page.text
    assert own_delete.status_code == 204


async def test_the_dashboard_shows_a_member_their_own_runs_only(
    app: Any, people: People, git_repo: GitRepo
) -> None:
    async with client(app) as c:
        mine = await fan_out(c, git_repo, people.alice)
        theirs = await fan_out(c, git_repo, people.bob)
    async with client(app) as c:
        assert (await c.post("/login", data={"token": people.alice_token})).status_code == 303
        home = await c.get("/", headers=HTML)
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', home.text)
        assert csrf is not None
        runs_page = await c.get("/runs", headers=HTML)
        pages = {
            path: (await c.get(path, headers=HTML)).status_code
            for path in (f"/runs/{theirs['id']}", f"/runs/{theirs['id']}/graph")
        }
        cancel_theirs = await c.post(
            f"/runs/{theirs['id']}/cancel", data={"csrf_token": csrf.group(1)}
        )
        own_page = await c.get(f"/runs/{mine['id']}", headers=HTML)
        session_page = await c.get(f"/sessions/{mine['sessions'][0]['id']}", headers=HTML)
        cancel_own = await c.post(f"/runs/{mine['id']}/cancel", data={"csrf_token": csrf.group(1)})
        form = {"csrf_token": csrf.group(1), "prompt": "echo more"}
        mine_ended = mine["sessions"][0]["id"]
        follow_up = await c.post(f"/sessions/{mine_ended}/followup", data=form)
        follow_theirs = await c.post(f"/sessions/{theirs['sessions'][0]['id']}/followup", data=form)
        child_id = follow_up.headers.get("location", "").rsplit("/", 1)[-1]
        child = await c.get(f"/api/sessions/{child_id}", headers=people.alice)
    assert home.status_code == runs_page.status_code == own_page.status_code == 200
    assert mine["sessions"][0]["id"] in home.text
    assert theirs["sessions"][0]["id"] not in home.text
    assert mine["id"] in runs_page.text
    assert theirs["id"] not in runs_page.text
    assert set(pages.values()) == {404}, pages
    assert 'id="owner">alice<' in session_page.text
    assert cancel_theirs.status_code == 404
    assert cancel_own.status_code == 303
    assert follow_up.status_code == 303, follow_up.text
    assert follow_theirs.status_code == 404
    assert (ok(child)["user"], ok(child)["parent_id"]) == ("alice", mine_ended)


async def fail(store: Store) -> None:
    """The oldest queued session ends failed, for good (as a worker reports it)."""
    run = await FakeRun.start(store)
    failed = Outcome(status=SessionStatus.FAILED, error="boom", retryable=False)
    await store.queue.finish(run.claimed.lease, failed)


async def test_status_shows_a_member_their_own_recent_failures_only(
    app: Any, store: Store, people: People, git_repo: GitRepo
) -> None:
    body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"}
    async with client(app) as c:
        theirs = ok(await c.post("/api/sessions", json=body, headers=people.bob), 201)
        await fail(store)
        mine = ok(await c.post("/api/sessions", json=body, headers=people.alice), 201)
        await fail(store)
        seen = {
            who: [f["id"] for f in ok(await c.get("/api/status", headers=h))["recent_failures"]]
            for who, h in (("alice", people.alice), ("ops", people.ops), ("val", people.val))
        }
    assert seen == {
        "alice": [mine["id"]],
        "ops": [mine["id"], theirs["id"]],
        "val": [mine["id"], theirs["id"]],
    }


async def test_a_members_costliest_sessions_are_their_own(
    app: Any, store: Store, people: People, git_repo: GitRepo
) -> None:
    body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"}
    async with client(app) as c:
        made = {
            who: ok(await c.post("/api/sessions", json=body, headers=h), 201)["id"]
            for who, h in (("alice", people.alice), ("bob", people.bob))
        }
        for who, cost in (("alice", 0.5), ("bob", 2.0)):
            row = UsageRow(
                endpoint="e", api="anthropic", status=200, latency_ms=1.0,
                session_id=made[who], cost_usd=cost,
            )  # fmt: skip
            await store.usage.record(row)
        seen = {
            who: ok(await c.get("/api/costs", headers=h))
            for who, h in (("alice", people.alice), ("ops", people.ops), ("val", people.val))
        }
        page = await c.get("/costs", headers={**people.alice, **HTML})
    tops = {who: [s["session_id"] for s in r["top_sessions"]] for who, r in seen.items()}
    assert tops == {
        "alice": [made["alice"]],
        "ops": [made["bob"], made["alice"]],
        "val": [made["bob"], made["alice"]],
    }
    assert seen["alice"]["total"]["cost_usd"] == 2.5  # the totals are everyone's
    assert page.status_code == 200
    assert made["alice"] in page.text
    assert made["bob"] not in page.text
