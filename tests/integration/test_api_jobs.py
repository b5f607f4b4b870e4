"""``/api/jobs``, ``/api/templates`` and ``POST /api/sessions`` with a template, against the
app; and two schedulers' real loops on one database."""

from __future__ import annotations

import asyncio

from telecoder.cli.jobs import cli_intake
from telecoder.scheduler import Scheduler
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from tests.conftest import GitRepo
from tests.integration.test_jobs import add_job, shell_job, slot_rows
from tests.server import client


async def test_jobs_over_the_api(settings: Settings, store: Store, git_repo: GitRepo) -> None:
    body = {
        "name": "bump",
        "schedule": "@daily",
        "timezone": "Asia/Tokyo",
        "repos": [str(git_repo.path)],
        "prompt": "echo bump >> README.md",
        "engine": "shell",
    }
    async with client(create_app(settings, store)) as c:
        made = await c.post("/api/jobs", json=body)
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "active"
        assert (await c.post("/api/jobs", json=body)).status_code == 409
        bad = await c.post("/api/jobs", json={**body, "name": "bad", "schedule": "@often"})
        assert bad.status_code == 422
        assert "@often" in bad.json()["detail"]
        both = await c.post("/api/jobs", json={**body, "name": "both", "template": "x"})
        assert both.status_code == 422
        gone = await c.post("/api/jobs", json={**body, "name": "gone", "repos": ["/no/such"]})
        assert gone.status_code == 422
        assert "/no/such" in gone.json()["detail"]
        tiny = await c.post("/api/jobs", json={**body, "name": "tiny", "schedule": "@every 1ms"})
        assert tiny.status_code == 422
        assert [j["name"] for j in (await c.get("/api/jobs")).json()] == ["bump"]

        fired = await c.post("/api/jobs/bump/run")
        assert fired.status_code == 201, fired.text
        run_id = fired.json()["id"]
        shown = (await c.get("/api/jobs/bump")).json()
        assert shown["last_run"]["id"] == run_id
        assert shown["timezone"] == "Asia/Tokyo"
        paused = (await c.post("/api/jobs/bump/pause")).json()
        assert (paused["status"], paused["paused_reason"], paused["next_run"]) == (
            "paused", "paused by hand", None
        )  # fmt: skip
        assert (await c.post("/api/jobs/bump/resume")).json()["status"] == "active"
        assert (await c.delete("/api/jobs/bump")).status_code == 204
        for method, path in [("GET", "/api/jobs/bump"), ("POST", "/api/jobs/bump/run"),
                             ("DELETE", "/api/jobs/bump")]:  # fmt: skip
            gone = await c.request(method, path)
            assert gone.status_code == 404
            assert gone.json()["error"] == "not_found"
        assert (await store.runs.get(run_id)).job == "bump"


async def test_a_session_from_a_template_over_the_api(
    settings: Settings, store: Store, git_repo: GitRepo
) -> None:
    base = {"repo": str(git_repo.path), "engine": "shell"}
    async with client(create_app(settings, store)) as c:
        listed = (await c.get("/api/templates")).json()
        assert "dependency-upgrade" in {t["name"] for t in listed}
        made = await c.post(
            "/api/sessions",
            json={**base, "template": "dependency-upgrade", "vars": {"package": "lodash"}},
        )
        assert made.status_code == 201, made.text
        prompt = (await store.sessions.get(made.json()["id"])).prompt
        assert "Upgrade the dependency lodash to version latest" in prompt
        missing = await c.post("/api/sessions", json={**base, "template": "dependency-upgrade"})
        assert missing.status_code == 422
        assert "'package'" in missing.json()["detail"]
        neither = await c.post("/api/sessions", json=base)
        assert neither.status_code == 422
        unknown = await c.post("/api/sessions", json={**base, "template": "nope"})
        assert unknown.status_code == 404
        assert (await c.get("/api/templates/nope")).status_code == 404


async def test_two_scheduler_loops_on_one_database_fire_each_slot_once(
    settings: Settings, db_url: str, git_repo: GitRepo
) -> None:
    fast = settings.model_copy(update={"jobs_poll_seconds": 0.01})
    add_job(fast, "race", shell_job(git_repo, "@every 0.2s"))
    one = await open_store(db_url, lease_seconds=5)
    two = await open_store(db_url, lease_seconds=5)
    stop = asyncio.Event()
    try:
        loops = [
            asyncio.create_task(Scheduler(s, fast, cli_intake(fast)).run(stop)) for s in (one, two)
        ]
        # Both loops race for at least 5 slots (~1 s; a loaded machine may take longer).
        deadline = asyncio.get_running_loop().time() + 30
        while len(await one.runs.list(job="race", limit=100)) < 5:
            assert asyncio.get_running_loop().time() < deadline, "fewer than 5 firings in 30 s"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*loops)
        runs = await one.runs.list(job="race", limit=100)
        slots = [r.spec["slot"] for r in runs]
        assert len(runs) >= 5
        assert len(slots) == len(set(slots)) == await slot_rows(one, "race")
    finally:
        await one.close()
        await two.close()


async def test_a_hook_may_name_a_template(settings: Settings, store: Store, git_repo) -> None:
    from tests.integration.test_hooks import define, signed

    define(
        settings,
        "deps",
        prompt=None,
        template="dependency-upgrade",
        vars={"package": "{{ payload.package }}", "version": "{{ payload.version }}"},
    )
    body, headers = signed(
        {"repo": str(git_repo.path), "package": "lodash", "version": "4.17.21"}, msg_id="m1"
    )
    async with client(create_app(settings, store)) as c:
        answer = await c.post("/api/hooks/deps", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        session = await store.sessions.get(answer.json()["session_id"])
        assert "Upgrade the dependency lodash to version 4.17.21" in session.prompt
        assert '<untrusted source="hook:deps">' in session.prompt  # payload text stays fenced
        body, headers = signed({"repo": str(git_repo.path)}, msg_id="m2")
        refused = await c.post("/api/hooks/deps", content=body, headers=headers)
        assert refused.status_code == 422
        assert "package" in refused.json()["detail"]
