"""Cost reports and estimates over the usage table, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from telecoder.domain import SessionStatus
from telecoder.estimate import estimate
from telecoder.store import By, Figures, Store
from telecoder.timerange import DAY
from tests.usage_rows import D0, day, finished, row, seed


@pytest.fixture
async def seeded(store: Store) -> dict[str, str]:
    return await seed(store)


async def test_totals_count_unpriced_requests_and_never_price_them(store, seeded):
    report = await store.costs.report(since=D0, until=D0 + 3 * DAY)
    assert report.total == Figures(
        requests=5,
        input_tokens=100 * 4 + 7000,
        output_tokens=10 * 4 + 700,
        cache_read_tokens=1000,
        cache_write_tokens=50,
        cost_usd=pytest.approx(0.01 + 0.02 + 0.5 + 0.003),
        unpriced_requests=1,
    )
    assert report.unpriced_models == ["local-llm"]
    assert report.by is None
    assert report.groups == []


async def test_groups_by_each_column_costliest_first(store, seeded):
    since, until = D0, D0 + 3 * DAY
    by_model = await store.costs.report(by=By.MODEL, since=since, until=until)
    assert [(g.key, g.figures.requests, round(g.figures.cost_usd, 4)) for g in by_model.groups] == [
        ("gpt-5", 1, 0.5),
        ("claude-sonnet-4-5", 3, 0.033),
        ("local-llm", 1, 0.0),
    ]
    assert by_model.groups[2].figures.unpriced_requests == 1
    by_user = await store.costs.report(by=By.USER, since=since, until=until)
    assert [(g.key, g.figures.requests) for g in by_user.groups] == [
        ("bob", 2),
        ("ann", 2),
        (None, 1),
    ]
    by_engine = await store.costs.report(by=By.ENGINE, since=since, until=until)
    assert [g.key for g in by_engine.groups] == ["codex", "claude-code", None]
    by_endpoint = await store.costs.report(by=By.ENDPOINT, since=since, until=until)
    assert {g.key for g in by_endpoint.groups} == {"anthropic", "openai", "ollama"}
    by_repo = await store.costs.report(by=By.REPO, since=since, until=until)
    assert [(g.key, g.figures.requests) for g in by_repo.groups] == [("/src/app", 4), (None, 1)]
    by_session = await store.costs.report(by=By.SESSION, since=since, until=until)
    assert [g.key for g in by_session.groups] == [seeded["b"], seeded["a"], None]


async def test_a_group_limit_keeps_the_costliest_and_says_there_are_more(store, seeded):
    report = await store.costs.report(by=By.MODEL, since=D0, until=D0 + 3 * DAY, limit=2)
    assert [g.key for g in report.groups] == ["gpt-5", "claude-sonnet-4-5"]
    assert report.more_groups
    assert not (await store.costs.report(by=By.MODEL, since=D0, until=D0 + 3 * DAY)).more_groups


async def test_days_are_utc_days_with_missing_days_at_zero(store, seeded):
    report = await store.costs.report(since=D0, until=D0 + 3 * DAY)
    assert [(d.key, d.figures.requests) for d in report.days] == [
        ("2026-11-20", 3),  # 23:59 UTC is still the 20th
        ("2026-11-21", 0),
        ("2026-11-22", 2),
    ]
    assert report.days[1].figures == Figures()
    assert report.days[0].figures.cost_usd == pytest.approx(0.53)
    by_day = await store.costs.report(by=By.DAY, since=D0, until=D0 + 3 * DAY)
    assert by_day.groups == by_day.days


async def test_an_open_range_runs_from_the_first_row_to_today(store, seeded):
    report = await store.costs.report(now=day(7))
    assert report.total.requests == 6
    assert report.days[0].key == "2026-11-20"
    assert report.days[-1].key == "2026-11-27"
    assert len(report.days) == 8
    assert report.days[5].figures.cost_usd == pytest.approx(1.0)


async def test_the_range_is_half_open(store, seeded):
    exact = day(0, 13)
    assert (await store.costs.report(since=exact, until=exact + 1)).total.requests == 1
    assert (await store.costs.report(since=exact - 1, until=exact)).total.requests == 0


async def test_top_sessions_are_the_costliest_with_their_prompts(store, seeded):
    report = await store.costs.report(since=D0, until=D0 + 3 * DAY, top=5)
    top = [(s.session_id, s.prompt, s.figures.requests) for s in report.top_sessions]
    assert top == [
        (seeded["b"], "write the docs", 2),
        (seeded["a"], "fix the flaky test", 2),
    ]
    assert report.top_sessions[0].status == SessionStatus.QUEUED
    assert report.top_sessions[0].figures.unpriced_requests == 1
    assert len((await store.costs.report(top=1, now=day(7))).top_sessions) == 1
    # Over all time, a's last request makes it the costliest.
    assert (await store.costs.report(now=day(7))).top_sessions[0].session_id == seeded["a"]


async def test_an_empty_table_reports_zero(store):
    report = await store.costs.report(by=By.MODEL)
    assert report.total == Figures()
    assert (report.groups, report.days, report.top_sessions) == ([], [], [])
    as_json = report.to_dict()
    assert as_json["total"]["requests"] == 0
    assert as_json["since"] is None


async def test_to_dict_is_the_api_shape(store, seeded):
    data = (await store.costs.report(by=By.MODEL, since=D0, until=D0 + DAY, top=1)).to_dict()
    assert data["by"] == "model"
    assert data["since"] == "2026-11-20T00:00:00.000Z"
    assert data["until"] == "2026-11-21T00:00:00.000Z"
    assert data["days"] == [{"day": "2026-11-20", **data["total"]}]
    assert data["groups"][0]["key"] == "gpt-5"
    assert data["top_sessions"][0]["session_id"] == seeded["b"]
    assert data["top_sessions"][0]["status"] == "queued"


# --- estimates ---------------------------------------------------------------------------------


async def test_an_estimate_from_similar_sessions_of_the_same_engine(store):
    for cost in (0.10, 0.20, 0.30):
        await finished(store, "fix the flaky login test", cost)
    await finished(store, "fix the flaky login test", 5.0, engine="codex")
    await finished(store, "rewrite the whole billing module in rust", 9.0)
    await finished(store, "fix the flaky login test", 0.0, status=SessionStatus.FAILED)
    await finished(store, "fix the flaky login test", 7.0, repo="/src/other")
    est = await estimate(
        store, repo="/src/app", engine="claude-code", model=None, prompt="fix the flaky test"
    )
    # The sessions report the model that ran them; the task names none: the engine's pool.
    assert (est.based_on, est.basis) == (3, "same engine, similar prompts")
    assert (est.median_usd, est.low_usd, est.high_usd) == pytest.approx((0.2, 0.1, 0.3))
    assert est.median_tokens == 110
    assert len(est.sessions) == 3


async def test_an_estimate_widens_its_pool_and_says_so(store):
    await finished(store, "fix the flaky login test", 1.0, engine="codex")
    await finished(store, "fix the flaky login test", 2.0, engine="codex")
    await finished(store, "fix the flaky login test", 3.0, engine="codex")
    est = await estimate(
        store, repo="/src/app", engine="claude-code", model=None, prompt="fix the flaky test"
    )
    assert (est.based_on, est.basis, est.median_usd) == (3, "any engine, similar prompts", 2.0)


async def test_no_history_says_so(store):
    await finished(store, "fix it", 1.0, repo="/src/other")
    await finished(store, "fix it", 1.0, status=SessionStatus.CANCELLED)
    est = await estimate(store, repo="/src/app", engine="claude-code", model=None, prompt="x")
    assert (est.based_on, est.basis, est.median_usd) == (0, "no history", None)
    assert est.to_dict()["sessions"] == []


async def test_rows_recorded_out_of_time_order_are_counted_exactly(store):
    """A request that ended later may be recorded first: ids are not quite time order."""
    for ts in (day(0, 1), day(5), day(0, 2), day(-1), day(0, 3)):
        await store.usage.record(row(ts))
    report = await store.costs.report(since=D0, until=D0 + DAY)
    assert report.total.requests == 3
    assert (await store.costs.report(since=D0 - DAY, until=D0)).total.requests == 1
    assert (await store.costs.report(since=D0 + DAY, until=D0 + 2 * DAY)).total.requests == 0
    assert (await store.costs.report(since=D0 - DAY, now=day(6))).total.requests == 5
