"""A council's tally on SQLite and PostgreSQL, from reviewers ended through the real queue:
``council.tally`` (and ``GET /api/runs/{id}/tally``, the same JSON) while one still runs and
after; the ``--merge`` pass through the judge model on the fake model server (its pairs name
groups of the sorted tally); the markdown report; a run that is no council."""

from __future__ import annotations

import json

import pytest

from telecoder import council, council_report
from telecoder.council_merge import ModelMerge
from telecoder.domain import (
    FailureKind,
    NewRun,
    NewSession,
    Result,
    ResultType,
    RunKind,
    SessionStatus,
)
from telecoder.errors import BadInput, TimedOut
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Outcome, Store
from tests.fakes.model_server import FakeModelServer, Reply
from tests.server import client


def answer(*titles: tuple[str, str]) -> str:
    recs = [{"title": t, "severity": "high", "location": loc} for t, loc in titles]
    return "Done.\n```json\n" + json.dumps({"recommendations": recs}) + "\n```"


LEAK = ("Connection leaked on error", "app/db.py:10")
LEAK_AGAIN = ("Database handle never closed when query fails", "app/db.py:11")  # other words
NAME = ("Rename helper", "app/util.py:3")


async def council_of(store: Store, texts: dict[str, str | None]) -> tuple[str, dict[str, str]]:
    """A council run whose reviewers ended: a text answer each, or failed (None)."""
    new = {
        name: NewSession(
            repo="/r",
            prompt="review",
            engine="shell",
            task_key=name,
            read_only=True,
            max_attempts=1,
        )
        for name in texts
    }
    run, _ = await store.runs.create(
        NewRun(kind=RunKind.COUNCIL, name="council: test", spec={"target": {"kind": "question"}}),
        list(new.values()),
    )
    for name, text in texts.items():
        claimed = await store.queue.claim("w", only=new[name].id)
        assert claimed is not None
        if text is None:
            outcome = Outcome(
                status=SessionStatus.FAILED,
                failure_kind=FailureKind.MODEL_ERROR,
                error="the model answered 500",
                retryable=False,
            )
        else:
            result = Result(type=ResultType.TEXT, text=text)
            outcome = Outcome(status=SessionStatus.SUCCEEDED, result=result)
        await store.queue.finish(claimed.lease, outcome)
    return run.id, {name: s.id for name, s in new.items()}


async def test_the_tally_over_the_api_and_with_a_model_merge(
    settings: Settings, store: Store
) -> None:
    run_id, _ids = await council_of(
        store,
        {"a": answer(LEAK, NAME), "b": answer(LEAK_AGAIN), "c": None},
    )
    run, result, reviews = await council.tally(store, run_id)
    data = council.tally_json(run, result, reviews)
    assert (data["answered"], data["missing"]) == (["a", "b"], ["c"])
    assert data["note"].startswith("made from 2 of 3 reviewers: c failed (failed (model_error)")
    assert data["complete"] is True
    # Words alone: the leak is two groups (minority each), as is the rename.
    assert [g["reviewers"] for g in data["minority"]] == [["a"], ["a"], ["b"]]
    assert data["consensus"] == []

    async with client(create_app(settings, store)) as c:
        over_http = await c.get(f"/api/runs/{run_id}/tally")
        missing = await c.get("/api/runs/run_nope/tally")
    assert over_http.status_code == 200
    assert over_http.json() == json.loads(json.dumps(data))
    assert missing.status_code == 404

    titles = [g["title"] for g in data["minority"]]
    leak, again = titles.index(LEAK[0]), titles.index(LEAK_AGAIN[0])
    with FakeModelServer(default=[Reply(text=json.dumps({"pairs": [[leak, again]]}))]) as model:
        judged = Settings(
            home=settings.home, judge_model="judge-model", judge_base_url=f"{model.url}/v1"
        )
        run, merged, reviews = await council.tally(
            store, run_id, merge=ModelMerge.from_settings(judged)
        )
        asked = [json.dumps(r.body) for r in model.model_requests()]
    joined = council.tally_json(run, merged, reviews)
    assert [(g["title"], g["reviewers"]) for g in joined["consensus"]] == [(LEAK[0], ["a", "b"])]
    assert [g["title"] for g in joined["minority"]] == [NAME[0]]
    (request,) = asked
    assert "&lt;untrusted" not in request
    assert LEAK_AGAIN[0] in request

    text = council_report.markdown(joined)
    assert "## Consensus (1)" in text
    assert "### Connection leaked on error" in text
    assert "- reviewers: a, b" in text
    assert "## Missing reviewers (1)" in text
    assert "- **c**: failed — failed (model_error): the model answered 500" in text


async def test_a_running_reviewer_is_pending_and_a_plan_is_no_council(store: Store) -> None:
    run_id, _ids = await council_of(store, {"a": answer(LEAK)})
    more = NewSession(repo="/r", prompt="review", engine="shell", task_key="b", read_only=True)
    pending, _ = await store.runs.create(
        NewRun(kind=RunKind.COUNCIL, spec={}),
        [NewSession(repo="/r", prompt="review", engine="shell", task_key="x"), more],
    )
    run, result, reviews = await council.tally(store, pending.id)
    data = council.tally_json(run, result, reviews)
    assert data["complete"] is False
    assert [r["status"] for r in data["reviewers"]] == ["pending", "pending"]
    assert data["answered"] == []
    with pytest.raises(TimedOut, match=r"0 of 2 reviewers ended within 0\.2 s"):
        await council.wait(store, pending.id, seconds=0.2, poll=0.05)
    ended, sessions = await council.wait(store, run_id, seconds=1)
    assert ended.status.value == "succeeded"
    assert sessions[0].read_only is True

    plan, _ = await store.runs.create(
        NewRun(kind=RunKind.PLAN), [NewSession(repo="/r", prompt="p", engine="shell")]
    )
    with pytest.raises(BadInput, match="is a plan run, not a council"):
        await council.tally(store, plan.id)
