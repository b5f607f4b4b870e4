"""A session that named no model reports, once it has ended, the model that answered it."""

from __future__ import annotations

from telecoder.domain import FailureKind, NewSession, SessionStatus
from telecoder.store import Outcome, Store
from tests.usage_rows import day, row


async def test_the_model_the_gateway_metered_is_the_sessions_once_it_ends(store: Store):
    new = NewSession(repo="/src/app", prompt="add a test", engine="codex")
    claimed = await store.queue.create_claimed(new, "w1")
    assert claimed is not None
    for model, status in (("gpt-5-codex", 200), ("gpt-5-mini", 200), ("gpt-5-codex", 200),
                          ("o3", 500), ("o3", 500), ("o3", 500)):  # fmt: skip
        await store.usage.record(
            row(day(0), session_id=new.id, model=model, status=status, engine="codex")
        )
    done = await store.queue.finish(claimed.lease, Outcome(status=SessionStatus.SUCCEEDED))
    assert done.model == "gpt-5-codex"  # most requests answered; failed ones do not count
    assert (await store.sessions.get(new.id)).model == "gpt-5-codex"


async def test_a_named_model_stays_and_no_metered_request_leaves_none(store: Store):
    named = NewSession(repo="/r", prompt="p", engine="codex", model="gpt-5")
    plain = NewSession(repo="/r", prompt="p", engine="shell")
    for new in (named, plain):
        claimed = await store.queue.create_claimed(new, "w1")
        assert claimed is not None
        await store.usage.record(row(day(0), session_id=named.id, model="other"))
        await store.queue.finish(claimed.lease, Outcome(status=SessionStatus.SUCCEEDED))
    assert (await store.sessions.get(named.id)).model == "gpt-5"
    assert (await store.sessions.get(plain.id)).model is None


async def test_an_attempt_to_be_retried_leaves_the_model_unset(store: Store):
    new = NewSession(repo="/src/app", prompt="add a test", engine="codex")
    claimed = await store.queue.create_claimed(new, "w1")
    assert claimed is not None
    await store.usage.record(row(day(0), session_id=new.id, model="gpt-5-codex"))
    retried = await store.queue.finish(
        claimed.lease, Outcome(status=SessionStatus.FAILED, failure_kind=FailureKind.STALLED)
    )
    assert retried.status == SessionStatus.QUEUED
    assert retried.model is None  # the next attempt is routed as the first was
