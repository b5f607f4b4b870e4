"""``GET /api/costs``, ``GET /api/costs/estimate`` and the dashboard's ``/costs`` page, against
``create_app(settings, store)`` on SQLite and PostgreSQL with real usage rows."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from telecoder.server import create_app
from tests.server import client
from tests.usage_rows import finished, seed

RANGE = {"since": "2026-11-20", "until": "2026-11-22"}  # the 20th, 21st and 22nd


@pytest.fixture
def app(settings, store):
    return create_app(settings, store)


@pytest.fixture
async def seeded(store):
    return await seed(store)


async def test_costs_in_a_range_grouped_by_model(app, seeded):
    async with client(app) as c:
        response = await c.get("/api/costs", params={**RANGE, "by": "model", "top": 1})
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["by"], data["since"], data["until"]) == (
        "model",
        "2026-11-20T00:00:00.000Z",
        "2026-11-23T00:00:00.000Z",
    )
    assert data["total"]["requests"] == 5
    assert data["total"]["unpriced_requests"] == 1
    assert data["total"]["cost_usd"] == pytest.approx(0.533)
    assert [(g["key"], g["requests"]) for g in data["groups"]] == [
        ("gpt-5", 1),
        ("claude-sonnet-4-5", 3),
        ("local-llm", 1),
    ]
    assert [(d["day"], d["requests"]) for d in data["days"]] == [
        ("2026-11-20", 3),
        ("2026-11-21", 0),
        ("2026-11-22", 2),
    ]
    assert [s["session_id"] for s in data["top_sessions"]] == [seeded["b"]]
    assert data["top_sessions"][0]["prompt"] == "write the docs"
    assert data["unpriced_models"] == ["local-llm"]
    assert data["more_groups"] is False


async def test_costs_without_a_range_or_a_group(app, seeded):
    async with client(app) as c:
        data = (await c.get("/api/costs")).json()
    assert data["total"]["requests"] == 6
    assert data["groups"] == []
    assert (data["by"], data["since"], data["until"]) == (None, None, None)
    assert data["days"][0]["day"] == "2026-11-20"


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"since": "7x"}, "since: '7x' is not a time: give 30m, 24h, 7d, 2w, a date"),
        ({"until": "2026-02-30"}, "until: '2026-02-30' is not a time"),
        ({"since": "1d", "until": "2d"}, "since (1d) must be before until (2d)"),
        ({"since": "0001-01-01T00:00+01:00"}, "before 1970 or after 9999"),
        ({"by": "colour"}, "by: Input should be 'model', 'engine', 'repo', 'user', 'day'"),
        ({"top": "101"}, "top: Input should be less than or equal to 100"),
        ({"since": "1d\x00"}, "since: Value error, must not contain NUL characters"),
    ],
)
async def test_bad_input_is_a_422_saying_what_is_wrong(app, params, detail):
    async with client(app) as c:
        response = await c.get("/api/costs", params=params)
    assert response.status_code == 422
    assert response.json()["error"] == "bad_input"
    assert detail in response.json()["detail"]


async def test_costs_need_a_token_like_every_api_route(settings, store):
    secured = create_app(
        settings.model_copy(update={"api_token": SecretStr("ops:costs-token-0123456789")}), store
    )
    async with client(secured) as c:
        refused = await c.get("/api/costs")
        estimate = await c.get("/api/costs/estimate", params={"repo": "/r", "prompt": "x"})
        allowed = await c.get(
            "/api/costs", headers={"authorization": "Bearer costs-token-0123456789"}
        )
    assert (refused.status_code, estimate.status_code, allowed.status_code) == (401, 401, 200)


async def test_the_routes_and_their_models_are_in_the_openapi(app):
    async with client(app) as c:
        spec = (await c.get("/openapi.json")).json()
    assert "/api/costs" in spec["paths"]
    assert "/api/costs/estimate" in spec["paths"]
    assert "/costs" not in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"CostsOut", "CostFigures", "CostGroup", "CostDay", "EstimateOut"} <= set(schemas)
    assert "unpriced_requests" in schemas["CostFigures"]["properties"]


# --- estimates ---------------------------------------------------------------------------------


async def test_an_estimate_from_the_repository_s_similar_sessions(app, store, git_repo):
    repo = str(git_repo.path)
    for cost in (0.1, 0.4, 0.2):
        await finished(store, "fix the flaky login test", cost, repo=repo)
    await finished(store, "fix the flaky login test", 3.0, repo=repo, engine="codex")
    params = {"repo": str(git_repo.path / "."), "prompt": "fix the flaky test"}
    async with client(app) as c:
        found = await c.get("/api/costs/estimate", params={**params, "engine": "claude-code"})
        other = await c.get("/api/costs/estimate", params={**params, "engine": "aider"})
    assert found.status_code == 200, found.text
    data = found.json()
    assert (data["repo"], data["engine"], data["model"]) == (repo, "claude-code", None)
    # The sessions report the model that ran them; the task names none: the engine's pool.
    assert (data["based_on"], data["basis"]) == (3, "same engine, similar prompts")
    assert (data["median_usd"], data["low_usd"], data["high_usd"]) == pytest.approx((0.2, 0.1, 0.4))
    assert len(data["sessions"]) == 3
    # No aider session: the other engines' similar sessions, and it says so.
    assert other.json()["basis"] == "any engine, similar prompts"
    assert other.json()["based_on"] == 4


async def test_an_estimate_with_no_history(app, settings, git_repo):
    async with client(app) as c:
        data = (
            await c.get("/api/costs/estimate", params={"repo": str(git_repo.path), "prompt": "x"})
        ).json()
    assert data["engine"] == settings.engine  # the server's default
    assert (data["based_on"], data["basis"], data["median_usd"]) == (0, "no history", None)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"engine": "nope"}, "unknown engine 'nope' (known: "),
        ({"repo": "/does/not/exist"}, "repository /does/not/exist does not exist"),
        ({"prompt": " "}, "prompt: must not be blank"),
        ({"repo": ""}, "repo: must not be blank"),
        ({"prompt": "x" * 8001}, "query.prompt: Value should have at most 8000"),
    ],
)
async def test_a_bad_estimate_request_is_a_422(app, git_repo, params, detail):
    query = {"repo": str(git_repo.path), "prompt": "fix it", **params}
    async with client(app) as c:
        response = await c.get("/api/costs/estimate", params=query)
    assert response.status_code == 422
    assert detail in response.json()["detail"]


# --- the dashboard page ------------------------------------------------------------------------


async def test_the_costs_page_shows_totals_days_top_sessions_and_tables(app, seeded):
    async with client(app) as c:
        page = await c.get("/costs", params=RANGE, headers={"accept": "text/html"})
        home = await c.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    assert '<a href="/costs">Costs</a>' in home.text  # in the nav
    assert re.search(r'id="total-cost" class="big">\$0\.53<', html)
    assert re.search(r'id="total-requests">5<', html)
    assert "1 request to models without a known price (local-llm)" in html
    bars = re.findall(r'<rect class="bar" data-day="([0-9-]+)"[^>]* height="([0-9.]+)"', html)
    assert [d for d, _ in bars] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    heights = [float(h) for _, h in bars]
    assert heights[0] == 160.0  # the peak day fills the chart
    assert heights[1] == 0.0
    assert 0 < heights[2] < 5  # a day with traffic shows, even a cheap one
    assert f'<a href="/sessions/{seeded["b"]}">write the docs</a>' in html
    assert f'<a href="/sessions/{seeded["a"]}">fix the flaky test</a>' in html
    for table in ("by-model", "by-engine", "by-repo"):
        assert f'id="{table}"' in html
    assert '<td class="key" title="gpt-5">gpt-5</td>' in html


async def test_the_costs_page_with_nothing_and_with_a_bad_time(app):
    async with client(app) as c:
        empty = await c.get("/costs", headers={"accept": "text/html"})
        bad = await c.get("/costs", params={"since": "soon"}, headers={"accept": "text/html"})
    assert empty.status_code == 200
    assert "No model requests in this period." in empty.text
    assert 'class="chip on">30d<' in empty.text
    assert bad.status_code == 422
    assert "since: &#39;soon&#39; is not a time" in bad.text


async def test_the_costs_page_refreshes_itself_in_place(app, store):
    async with client(app) as c:
        page = await c.get("/costs", params=RANGE, headers={"accept": "text/html"})
        await seed(store)
        again = await c.get("/costs", params=RANGE, headers={"hx-request": "true"})
    assert 'hx-get="/costs?since=2026-11-20&amp;until=2026-11-22"' in page.text
    assert 'hx-trigger="every 30s" hx-select="#costs"' in page.text
    assert re.search(r'id="total-requests">0<', page.text)
    assert again.status_code == 200
    assert re.search(r'id="total-requests">5<', again.text)
