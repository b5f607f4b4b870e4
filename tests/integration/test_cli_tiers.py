"""``telecoder run --tier`` and ``tier`` in the API; a tier chosen from the task otherwise; the
models that answered in ``show``."""

from __future__ import annotations

import json

from telecoder.server import create_app
from telecoder.store import UsageRow
from tests.cli import cli_env, telecoder
from tests.server import client


def test_run_takes_a_tier_or_chooses_one(home, git_repo):
    env = cli_env(home)
    base = ("run", "--repo", str(git_repo.path), "--engine", "shell", "--detach", "--json")
    given = telecoder(*base, "--tier", "complex", "echo hi", env=env)
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["tier"] == "complex"
    chosen = telecoder(*base, "echo hi", env=env)
    assert json.loads(chosen.stdout)["tier"] == "trivial"  # short, no file named
    pinned = telecoder(*base, "--model", "m-1", "echo hi", env=env)
    assert json.loads(pinned.stdout)["tier"] is None  # a pinned model: no tier routing
    wrong = telecoder(*base, "--tier", "huge", "echo hi", env=env)
    assert wrong.returncode == 2
    assert json.loads(wrong.stdout) == {
        "error": {
            "code": "bad_input",
            "message": "unknown tier 'huge' (known: trivial, standard, complex)",
        }
    }
    shown = telecoder("show", json.loads(given.stdout)["id"], "--json", env=env)
    assert json.loads(shown.stdout)["models"] == []


async def test_api_tier_and_the_models_that_answered(settings, store, git_repo):
    app = create_app(settings, store)
    async with client(app) as c:
        body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"}
        made = await c.post("/api/sessions", json={**body, "tier": "standard"})
        assert made.status_code == 201, made.text
        assert made.json()["tier"] == "standard"
        bad = await c.post("/api/sessions", json={**body, "tier": "huge"})
        assert (bad.status_code, bad.json()["fields"][0]["field"]) == (422, "tier")
        sid = made.json()["id"]
        for endpoint, model, status in [
            ("anthropic", "claude-haiku-4-5", 200),
            ("anthropic", "claude-haiku-4-5", 200),
            ("anthropic-2", "claude-sonnet-4-5", 200),
            ("anthropic", "claude-haiku-4-5", 429),  # did not answer
        ]:
            await store.usage.record(
                UsageRow(
                    endpoint=endpoint,
                    api="anthropic",
                    status=status,
                    latency_ms=1.0,
                    session_id=sid,
                    model=model,
                )
            )
        shown = (await c.get(f"/api/sessions/{sid}")).json()
        page = await c.get(f"/sessions/{sid}", headers={"accept": "text/html"})
    assert "claude-haiku-4-5 at anthropic (2), claude-sonnet-4-5 at anthropic-2 (1)" in page.text
    assert "<dt>Tier</dt><dd>standard</dd>" in page.text
    assert shown["models"] == [
        {"endpoint": "anthropic", "model": "claude-haiku-4-5", "requests": 2},
        {"endpoint": "anthropic-2", "model": "claude-sonnet-4-5", "requests": 1},
    ]
