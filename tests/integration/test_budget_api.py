"""Budgets over HTTP, on SQLite and PostgreSQL: a session's budget and time limit at submit,
raising a budget (and resuming a session that waits on it), the period budgets; and the same
through ``telecoder … --server``'s client."""

from __future__ import annotations

import asyncio
import json
from asyncio.subprocess import PIPE

import pytest

from telecoder.client import Client
from telecoder.domain import EventKind, FailureKind, NewEvent, NewSession, SessionStatus
from telecoder.errors import BadInput, Conflict
from telecoder.gateway.budget import message
from telecoder.server import create_app
from telecoder.store import Outcome, Store, UsageRow
from tests.cli import TELECODER, cli_env
from tests.conftest import GitRepo
from tests.integration.test_api import submit
from tests.integration.test_dashboard import HTML, csrf_of
from tests.server import client, serving


@pytest.fixture
def app(settings, store):
    return create_app(settings, store)


async def test_a_session_is_submitted_with_its_budget_and_time_limit(app, git_repo: GitRepo):
    async with client(app) as c:
        made = await submit(c, git_repo, budget_usd=2.5, max_time="1h30m")
        assert (made["budget_usd"], made["timeout_seconds"]) == (2.5, 5400)
        plain = await submit(c, git_repo)
        assert (plain["budget_usd"], plain["timeout_seconds"]) == (None, None)
        body = {"repo": str(git_repo.path), "prompt": "true"}
        for bad, field in [
            ({"max_time": "soon"}, "not a duration"),
            ({"max_time": "30m", "timeout_seconds": 60}, "both set the time limit"),
            ({"max_time": "8d"}, "longer than 7 days"),
            ({"budget_usd": -1}, "budget_usd"),
        ]:
            response = await c.post("/api/sessions", json={**body, **bad})
            assert response.status_code == 422, response.text
            assert field in response.text
        shown = (await c.get(f"/api/sessions/{made['id']}")).json()
        assert shown["budget_usd"] == 2.5
        assert shown["cost_usd"] == 0.0


def new_session(**kw: object) -> NewSession:
    return NewSession(repo="/srv/repo", prompt="work", engine="shell", **kw)  # type: ignore[arg-type]


async def blocked_on_budget(store: Store, session_id: str, spent: float) -> None:
    claimed = await store.queue.claim("w1", only=session_id)
    assert claimed is not None
    await store.usage.record(
        UsageRow(endpoint="e", api="anthropic", status=200, latency_ms=1.0,
                 session_id=session_id, cost_usd=spent)
    )  # fmt: skip
    error = message(spent, 0.5)
    outcome = Outcome(
        status=SessionStatus.BLOCKED, failure_kind=FailureKind.BUDGET_REACHED, error=error
    )
    await store.queue.finish(claimed.lease, outcome)


async def test_raising_a_budget_resumes_a_session_waiting_on_it(app, store, git_repo: GitRepo):
    async with client(app) as c:
        made = await submit(c, git_repo, budget_usd=0.5)
        url = f"/api/sessions/{made['id']}/budget"
        queued = await c.post(url, json={"add": 1.0})
        assert queued.status_code == 200, queued.text
        assert (queued.json()["status"], queued.json()["budget_usd"]) == ("queued", 1.5)
        for bad in ({}, {"usd": 1, "add": 1}, {"add": 0}, {"usd": -2}, {"usd": "x"}):
            assert (await c.post(url, json=bad)).status_code == 422, bad
        await c.post(url, json={"usd": 0.5})
        await blocked_on_budget(store, made["id"], 0.6)
        waiting = (await c.get(f"/api/sessions/{made['id']}")).json()
        assert (waiting["status"], waiting["failure_kind"]) == ("blocked", "budget_reached")
        assert waiting["error"] == "budget reached: $0.60 of $0.50 — raise it or stop"
        too_low = await c.post(url, json={"usd": 0.6})
        assert too_low.status_code == 422
        assert "not above what session" in too_low.json()["detail"]
        resumed = await c.post(url, json={"usd": 3})
        assert resumed.status_code == 200
        assert resumed.json()["status"] == "queued"
        assert resumed.json()["budget_usd"] == 3
        assert resumed.json()["error"] is None
        await c.post(f"/api/sessions/{made['id']}/cancel")
        ended = await c.post(url, json={"add": 1})
        assert ended.status_code == 409
        assert (await c.post("/api/sessions/nosuchsess/budget", json={"add": 1})).status_code == 404


async def test_period_budgets_are_listed_and_set(settings, store):
    app = create_app(settings.model_copy(update={"budget_monthly_usd": 100.0}), store)
    await store.usage.record(
        UsageRow(endpoint="e", api="anthropic", status=200, latency_ms=1, cost_usd=17.0)
    )
    async with client(app) as c:
        listed = (await c.get("/api/budgets")).json()
        assert [(b["scope"], b["period"], b["source"]) for b in listed] == [
            ("global", "monthly", "settings")
        ]
        daily = await c.put("/api/budgets", json={"period": "daily", "usd": 20})
        assert daily.status_code == 200, daily.text
        found = {(b["scope"], b["period"]): b for b in daily.json()}
        assert found["global", "daily"] == {
            "scope": "global",
            "user": None,
            "period": "daily",
            "limit_usd": 20.0,
            "spent_usd": 17.0,
            "percent": 85.0,
            "reached": False,
            "period_key": found["global", "daily"]["period_key"],
            "alerted_level": 0,
            "source": "set",
        }
        mine = await c.put("/api/budgets", json={"period": "monthly", "usd": 1, "user": "alice"})
        assert ("user:alice", "monthly") in {(b["scope"], b["period"]) for b in mine.json()}
        gone = await c.put("/api/budgets", json={"period": "monthly", "usd": None, "user": "alice"})
        assert ("user:alice", "monthly") not in {(b["scope"], b["period"]) for b in gone.json()}
        for bad in ({"period": "weekly", "usd": 1}, {"period": "daily"}, {"period": "daily",
                    "usd": -1}, {"period": "daily", "usd": 1, "user": "a b"}):  # fmt: skip
            assert (await c.put("/api/budgets", json=bad)).status_code == 422, bad


async def test_the_client_raises_budgets_and_sets_period_budgets(
    settings, store: Store, git_repo: GitRepo
):
    app = create_app(settings, store)
    async with serving(app) as url, Client(url) as api:
        made = await api.create({"repo": str(git_repo.path), "prompt": "true", "budget_usd": 1})
        raised = await api.raise_budget(made["id"], {"add": 0.5})
        assert raised["budget_usd"] == 1.5
        await api.cancel(made["id"])
        with pytest.raises(Conflict):
            await api.raise_budget(made["id"], {"add": 0.5})
        with pytest.raises(BadInput):
            await api.raise_budget(made["id"], {})
        after = await api.put_budget({"period": "daily", "usd": 3})
        assert [b["limit_usd"] for b in after] == [3.0]
        assert await api.budgets() == after


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(TELECODER, *args, env=env, stdout=PIPE, stderr=PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_speaks_budgets_to_a_server(settings, store, git_repo: GitRepo, home):
    app = create_app(settings, store)
    env = cli_env(home / "elsewhere")
    async with serving(app) as url, Client(url) as api:
        made = await api.create({"repo": str(git_repo.path), "prompt": "true"})
        code, out, err = await cli("budget", made["id"], "+1.00", "--server", url, env=env)
        assert (code, out.strip()) == (0, f"{made['id']}: budget $1.00"), err
        code, out, _ = await cli("budget", made["id"], "4", "--json", "--server", url, env=env)
        assert json.loads(out)["budget_usd"] == 4.0
        code, _, err = await cli("budget", "nosuchsess", "+1", "--server", url, env=env)
        assert code == 3
        args = ("budgets", "set", "--period", "daily", "--usd", "3", "--user", "ann")
        code, out, err = await cli(*args, "--json", "--server", url, env=env)
        assert code == 0, err
        assert [(b["scope"], b["limit_usd"]) for b in json.loads(out)] == [("user:ann", 3.0)]
        code, out, _ = await cli("budgets", "list", "--server", url, env=env)
        assert "user:ann" in out
        args = ("budgets", "remove", "--period", "daily", "--user", "ann", "--json")
        code, out, _ = await cli(*args, "--server", url, env=env)
        assert (code, json.loads(out)) == (0, [])


async def test_the_dashboard_shows_a_budget_and_raises_it(app, store):
    made = await store.sessions.create(new_session(budget_usd=0.5))
    await blocked_on_budget(store, made.id, 0.6)
    alert = {"level": 90, "message": "daily budget at 90 %"}
    await store.events.append(made.id, [NewEvent(kind=EventKind.BUDGET_ALERT, data=alert)])
    async with client(app) as c:
        page = (await c.get(f"/sessions/{made.id}", headers=HTML)).text
        assert "$0.50 (spent $0.60)" in page
        assert 'id="raise-budget"' in page
        assert "budget reached: $0.60 of $0.50 — raise it or stop" in page
        assert "budget alert 90 %" in page
        listed = (await c.get("/", headers=HTML)).text
        assert "$0.60 of $0.50" in listed
        token = csrf_of(page)
        url = f"/sessions/{made.id}/budget"
        bad = await c.post(url, data={"csrf_token": token, "amount": "x"})
        assert bad.status_code == 303
        assert (await store.sessions.get(made.id)).status == SessionStatus.BLOCKED
        done = await c.post(url, data={"csrf_token": token, "amount": "+1"})
        assert done.status_code == 303
    raised = await store.sessions.get(made.id)
    assert (raised.status, raised.budget_usd) == (SessionStatus.QUEUED, 1.5)
