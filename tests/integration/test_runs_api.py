"""Runs over HTTP (SQLite and PostgreSQL): ``/api/runs`` (list, show, cancel, retry-failed, 404
and 409, in the OpenAPI document), ``telecoder runs … --server`` against the real app on a
port (the same JSON and exit codes as locally), and the dashboard's run pages and their live
fragment."""

from __future__ import annotations

import asyncio
import json
import re

from telecoder.domain import (
    Dependency,
    FailureKind,
    NewRun,
    NewSession,
    Result,
    ResultType,
    RunKind,
    SessionStatus,
)
from telecoder.server import create_app
from telecoder.server.schemas import SessionOut
from telecoder.settings import Settings
from telecoder.store import Outcome, Store
from tests.cli import cli_env, telecoder
from tests.server import client, serving

HTML = {"accept": "text/html"}


async def dag(store: Store) -> tuple[str, dict[str, str]]:
    """a → (b, c) → d, where a succeeded with a pull request and b failed: c is queued and d
    skipped."""
    new = {
        k: NewSession(repo="/r", prompt=f"do {k}", engine="shell", task_key=k, max_attempts=1)
        for k in "abcd"
    }
    ids = {k: s.id for k, s in new.items()}
    deps = [
        Dependency(session_id=ids[x], depends_on=ids[y])
        for x, y in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c"))
    ]
    run, _ = await store.runs.create(
        NewRun(kind=RunKind.PLAN, name="dag"), list(new.values()), deps
    )
    for key, ok in (("a", True), ("b", False)):
        claimed = await store.queue.claim("w", only=ids[key])
        assert claimed is not None
        pr = Result(type=ResultType.BRANCH, branch="tc/a", pr_url="https://forge.example/pr/1")
        outcome = (
            Outcome(status=SessionStatus.SUCCEEDED, result=pr, cost_usd=0.5, input_tokens=7)
            if ok
            else Outcome(
                status=SessionStatus.FAILED,
                failure_kind=FailureKind.ENGINE_ERROR,
                error="exit 1",
                retryable=False,
                cost_usd=0.25,
            )
        )
        await store.queue.finish(claimed.lease, outcome)
    return run.id, ids


async def test_api_lists_shows_cancels_and_retries_runs(settings: Settings, store: Store) -> None:
    run_id, ids = await dag(store)
    async with client(create_app(settings, store)) as c:
        listed = await c.get("/api/runs", params={"limit": 5})
        shown = await c.get(f"/api/runs/{run_id}")
        missing = await c.get("/api/runs/run_nope")
        bad = await c.get("/api/runs/no%20such")
        retried = await c.post(f"/api/runs/{run_id}/retry-failed")
        cancelled = await c.post(f"/api/runs/{run_id}/cancel")
        again = await c.post(f"/api/runs/{run_id}/cancel")
        nothing = await c.post(f"/api/runs/{run_id}/retry-failed")
        unknown = await c.post("/api/runs/run_nope/cancel")
        spec = (await c.get("/openapi.json")).json()
    assert listed.status_code == 200
    assert [(r["id"], r["status"]) for r in listed.json()] == [(run_id, "running")]
    assert listed.json()[0]["totals"]["statuses"] == {
        "queued": 1, "succeeded": 1, "failed": 1, "skipped": 1
    }  # fmt: skip
    body = shown.json()
    assert (body["id"], body["kind"], body["name"], body["status"]) == (
        run_id, "plan", "dag", "running"
    )  # fmt: skip
    t = body["totals"]
    assert (t["sessions"], t["cost_usd"], t["input_tokens"]) == (4, 0.75, 7)
    assert t["pr_urls"] == ["https://forge.example/pr/1"]
    rows = {s["task_key"]: s for s in body["sessions"]}
    assert set(rows["a"]) >= {
        "id", "task_key", "repo", "status", "branch", "pr_url", "cost_usd", "error", "depends_on"
    }  # fmt: skip
    assert set(rows["a"]) - {"pr_url", "depends_on"} == set(SessionOut.model_fields)
    assert rows["a"]["pr_url"] == "https://forge.example/pr/1"
    assert sorted(rows["d"]["depends_on"]) == sorted([ids["b"], ids["c"]])
    assert rows["b"]["depends_on"] == [ids["a"]]
    assert {(d["session_id"], d["after"]) for d in body["deps"]} >= {(ids["d"], "after")}
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert bad.status_code == 422
    assert retried.status_code == 200
    after_retry = {s["task_key"]: s["status"] for s in retried.json()["sessions"]}
    assert after_retry == {"a": "succeeded", "b": "queued", "c": "queued", "d": "waiting"}
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    statuses = {s["task_key"]: s["status"] for s in cancelled.json()["sessions"]}
    assert statuses == {"a": "succeeded", "b": "cancelled", "c": "cancelled", "d": "cancelled"}
    assert again.status_code == 409
    assert nothing.status_code == 200  # the cancelled ones can be retried
    assert unknown.status_code == 404
    paths = spec["paths"]
    assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/cancel"} <= set(paths)
    assert {"404", "409"} <= set(paths["/api/runs/{run_id}/retry-failed"]["post"]["responses"])
    assert "/runs" not in paths  # the pages are not API


async def test_cli_runs_against_a_server(settings: Settings, store: Store, tmp_path) -> None:
    run_id, ids = await dag(store)
    env = cli_env(tmp_path / "client-home")
    async with serving(create_app(settings, store)) as url:

        def run(*args: str):  # type: ignore[no-untyped-def]
            return telecoder("runs", *args, "--server", url, env=env)

        listed = await asyncio.to_thread(run, "list", "--json")
        shown = await asyncio.to_thread(run, "show", run_id, "--json")
        table = await asyncio.to_thread(run, "show", run_id)
        overview = await asyncio.to_thread(run, "list")
        missing = await asyncio.to_thread(run, "show", "run_nope")
        retried = await asyncio.to_thread(run, "retry-failed", run_id)
        cancelled = await asyncio.to_thread(run, "cancel", run_id, "--json")
        again = await asyncio.to_thread(run, "cancel", run_id)
        api = json.loads(shown.stdout)
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    assert shown.returncode == 0, shown.stderr
    assert api["totals"]["pr_urls"] == ["https://forge.example/pr/1"]
    assert {s["id"] for s in api["sessions"]} == set(ids.values())
    assert table.returncode == 0, table.stderr
    for line in ("a → b", "a → c", "b → d", "c → d", "https://forge.example/pr/1", "skipped"):
        assert line in table.stdout
    assert run_id in overview.stdout
    assert missing.returncode == 3
    assert retried.returncode == 0, retried.stderr
    assert f"{run_id} running" in retried.stdout
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert again.returncode == 4
    assert "already cancelled" in again.stderr


async def test_dashboard_run_pages_and_the_live_fragment(settings: Settings, store: Store) -> None:
    run_id, ids = await dag(store)
    async with client(create_app(settings, store)) as c:
        listing = await c.get("/runs", headers=HTML)
        page = await c.get(f"/runs/{run_id}", headers=HTML)
        fragment = await c.get(f"/runs/{run_id}/graph", headers={"hx-request": "true"})
        session = await c.get(f"/sessions/{ids['d']}", headers=HTML)
        home = await c.get("/", headers=HTML)
        missing = await c.get("/runs/run_nope", headers=HTML)
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert token is not None
        cancel = await c.post(f"/runs/{run_id}/cancel", data={"csrf_token": token.group(1)})
        ended = await c.get(f"/runs/{run_id}/graph", headers={"hx-request": "true"})
    assert listing.status_code == 200
    assert f'href="/runs/{run_id}"' in listing.text
    assert page.status_code == 200
    assert 'hx-trigger="every 2s"' in page.text  # live while it runs
    assert f'hx-get="/runs/{run_id}/graph"' in page.text
    for key, status in (("a", "succeeded"), ("b", "failed"), ("c", "queued"), ("d", "skipped")):
        assert f'data-key="{key}" data-status="{status}"' in page.text
        assert f'href="/sessions/{ids[key]}"' in page.text
    assert page.text.count('class="edge') == 4
    assert 'href="https://forge.example/pr/1"' in page.text
    assert "$0.75" in page.text
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="run"')
    assert "<html" not in fragment.text
    assert f'href="/runs/{run_id}" id="run-link"' in session.text
    assert 'href="/runs"' in home.text  # in the nav
    assert missing.status_code == 404
    assert cancel.status_code == 303
    assert 'data-status="cancelled"' in ended.text
    assert "every 2s" not in ended.text  # ended: no more polling
