"""Budgets in the store, on SQLite and PostgreSQL: raising a session's budget (and requeueing it
when it waits on it), period budgets over the usage table, alerts once per period, and claims
that start no new session while a period budget is spent."""

from __future__ import annotations

import time

import pytest

from telecoder.amounts import BudgetChange
from telecoder.domain import EventKind, FailureKind, NewSession, SessionStatus
from telecoder.errors import BadInput, Conflict
from telecoder.gateway.budget import message
from telecoder.store import Outcome, Store, UsageRow
from telecoder.store.budgets import Held, defaults_of
from tests.integration.test_engine_shell import all_events

NO_DEFAULTS = defaults_of(None, None)


def new(prompt: str = "true", user: str | None = None, **kw: object) -> NewSession:
    origin = {"channel": "api", "principal": user} if user else None
    return NewSession(repo="/r", prompt=prompt, engine="shell", origin=origin, **kw)  # type: ignore[arg-type]


async def spend(store: Store, usd: float, *, user: str | None = None, ts: float | None = None):
    await store.usage.record(
        UsageRow(
            endpoint="anthropic", api="anthropic", status=200, latency_ms=1.0, user=user,
            cost_usd=usd, ts=ts if ts is not None else time.time(),
        )
    )  # fmt: skip


async def blocked_on_budget(store: Store, budget: float = 0.05, spent: float = 0.06) -> str:
    created = await store.sessions.create(new(budget_usd=budget))
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    await store.usage.record(
        UsageRow(endpoint="e", api="anthropic", status=200, latency_ms=1.0,
                 session_id=created.id, cost_usd=spent)
    )  # fmt: skip
    outcome = Outcome(
        status=SessionStatus.BLOCKED,
        failure_kind=FailureKind.BUDGET_REACHED,
        error=message(spent, budget),
    )
    done = await store.queue.finish(claimed.lease, outcome)
    assert (done.status, done.failure_kind) == (SessionStatus.BLOCKED, FailureKind.BUDGET_REACHED)
    return created.id


async def test_a_session_waiting_on_its_budget_is_queued_again_when_it_is_raised(
    store: Store,
) -> None:
    session_id = await blocked_on_budget(store)
    events = await all_events(store, session_id)
    blocked = events[-1].data
    assert blocked["status"] == "blocked"
    assert blocked["reason"] == "budget reached: $0.06 of $0.05 — raise it or stop"
    with pytest.raises(BadInput, match=r"not above what session .* has spent \(\$0\.06\)"):
        await store.budgets.raise_session(session_id, BudgetChange(0.06))
    raised = await store.budgets.raise_session(session_id, BudgetChange(1.0, add=True))
    assert raised.status == SessionStatus.QUEUED
    assert raised.budget_usd == pytest.approx(1.05)
    assert raised.error is None
    tail = [(e.kind, e.data) for e in (await all_events(store, session_id))[-2:]]
    assert tail == [
        (EventKind.PROGRESS, {"step": "budget_raised", "budget_usd": 1.05, "was": 0.05}),
        (EventKind.STATUS, {"status": "queued", "reason": "the budget was raised to $1.05"}),
    ]
    again = await store.queue.claim("w2")
    assert again is not None
    assert again.session.id == session_id
    # A raise while it runs: only the budget changes.
    running = await store.budgets.raise_session(session_id, BudgetChange(5.0))
    assert (running.status, running.budget_usd) == (SessionStatus.RUNNING, 5.0)


async def test_raises_of_ended_or_chat_waiting_sessions(store: Store) -> None:
    queued = await store.sessions.create(new())
    assert (
        await store.budgets.raise_session(queued.id, BudgetChange(2.0, add=True))
    ).budget_usd == 2
    still = await store.sessions.get(queued.id)
    assert still.status == SessionStatus.QUEUED
    await store.sessions.cancel(queued.id)
    with pytest.raises(Conflict, match="has ended"):
        await store.budgets.raise_session(queued.id, BudgetChange(1.0))
    # Cancelling a session that waits on its budget says so.
    waiting = await blocked_on_budget(store)
    cancelled = await store.sessions.cancel(waiting)
    assert cancelled.status == SessionStatus.CANCELLED
    assert cancelled.error == "cancelled while it waited for its budget to be raised"


async def test_period_budgets_add_up_the_usage_of_their_period(store: Store) -> None:
    assert await store.budgets.status(NO_DEFAULTS) == []
    await store.budgets.set("global", "daily", 20.0)
    await store.budgets.set("user:alice", "monthly", 5.0)
    await store.budgets.set("global", "daily", 10.0)  # set again: replaced
    yesterday = time.time() - 86400 * 1.5
    await spend(store, 3.0, user="alice")
    await spend(store, 1.0, user="bob")
    await spend(store, 100.0, user="alice", ts=yesterday)  # another day (maybe this month)
    found = {(b.scope, b.period): b for b in await store.budgets.status(NO_DEFAULTS)}
    assert set(found) == {("global", "daily"), ("user:alice", "monthly")}
    daily = found["global", "daily"]
    assert (daily.limit_usd, daily.spent_usd, daily.percent, daily.reached) == (10, 4, 40, False)
    assert daily.source == "set"
    alice = found["user:alice", "monthly"]
    assert alice.user == "alice"
    assert alice.spent_usd in (3.0, 103.0)  # yesterday may be last month
    assert await store.budgets.remove("user:alice", "monthly")
    assert not await store.budgets.remove("user:alice", "monthly")
    with pytest.raises(BadInput, match="unknown period"):
        await store.budgets.set("global", "weekly", 1)
    with pytest.raises(BadInput, match="unknown budget scope"):
        await store.budgets.set("team:x", "daily", 1)
    # A setting is a default a set budget overrides.
    defaults = defaults_of(50.0, 500.0)
    listed = [
        (b.scope, b.period, b.limit_usd, b.source) for b in await store.budgets.status(defaults)
    ]
    assert listed == [("global", "daily", 10.0, "set"), ("global", "monthly", 500.0, "settings")]


async def test_alerts_are_sent_once_per_level_and_period(store: Store) -> None:
    await store.budgets.set("global", "daily", 10.0)
    assert await store.budgets.alerts(NO_DEFAULTS, None) == []
    await spend(store, 8.5)
    first = await store.budgets.alerts(NO_DEFAULTS, None)
    assert [(a.scope, a.period, a.level) for a in first] == [("global", "daily", 80)]
    assert first[0].message.startswith("daily budget at 80 %: $8.50 of $10.00")
    assert await store.budgets.alerts(NO_DEFAULTS, None) == []  # sent already
    await spend(store, 2.0)
    assert [a.level for a in await store.budgets.alerts(NO_DEFAULTS, "alice")] == [90, 100]
    assert await store.budgets.alerts(NO_DEFAULTS, None) == []
    (daily,) = await store.budgets.status(NO_DEFAULTS)
    assert daily.alerted_level == 100
    # Tomorrow is another period: the levels start again.
    tomorrow = time.time() + 86400
    assert await store.budgets.alerts(NO_DEFAULTS, None, now=tomorrow) == []
    # A user's budget alerts for that user's spending only; a settings default alerts too.
    await store.budgets.set("user:bob", "daily", 1.0)
    await spend(store, 0.9, user="bob")
    assert await store.budgets.alerts(NO_DEFAULTS, "alice") == []
    bob = await store.budgets.alerts(defaults_of(None, 12.0), "bob")
    assert sorted((a.scope, a.level) for a in bob) == [
        ("global", 80),  # the month's $11.40 of $12.00: 95 %
        ("global", 90),
        ("user:bob", 80),  # every level crossed at once is an alert of its own
        ("user:bob", 90),
    ]
    assert await store.budgets.alerts(defaults_of(None, 12.0), "bob") == []
    monthly = [
        b for b in await store.budgets.status(defaults_of(None, 12.0)) if b.period == "monthly"
    ]
    assert [(b.source, b.alerted_level) for b in monthly] == [("settings", 90)]


async def test_a_spent_period_budget_holds_new_sessions_not_started_ones(store: Store) -> None:
    started = await store.sessions.create(new("started"))
    claimed = await store.queue.claim("w1")
    assert claimed is not None
    await store.queue.release(claimed.lease, "shutdown")  # queued again, but it has begun
    waiting = await store.sessions.create(new("new", user="alice"))
    other = await store.sessions.create(new("other", user="bob"))
    await store.budgets.set("user:alice", "daily", 1.0)
    await spend(store, 1.0, user="alice")
    held = await store.budgets.held(NO_DEFAULTS)
    assert held == Held(None, {"alice": "waiting: alice's daily budget reached ($1.00 of $1.00)"})
    assert await store.budgets.hold(held) == [waiting.id]
    assert await store.budgets.hold(held) == []  # told once
    told = await store.sessions.get(waiting.id)
    assert (told.status, told.error) == (SessionStatus.QUEUED, held.users["alice"])
    assert (await all_events(store, waiting.id))[-1].data == {
        "status": "queued",
        "reason": "waiting: alice's daily budget reached ($1.00 of $1.00)",
    }
    picked = []
    while (c := await store.queue.claim("w2", held=held)) is not None:
        picked.append(c.session.id)
    assert sorted(picked) == sorted([started.id, other.id])
    # Everyone's budget spent: not even a session of nobody in particular starts.
    late = await store.sessions.create(new("late"))
    await store.budgets.set("global", "daily", 0.5)
    everyone = await store.budgets.held(NO_DEFAULTS)
    assert everyone.everyone == "waiting: daily budget reached ($1.00 of $0.50)"
    assert await store.queue.claim("w2", held=everyone) is None
    assert sorted(await store.budgets.hold(everyone)) == sorted([waiting.id, late.id])
    # The limit raised: the waiting sessions' reasons are cleared and they start.
    await store.budgets.set("global", "daily", 100.0)
    await store.budgets.set("user:alice", "daily", 100.0)
    assert (await store.sessions.get(waiting.id)).error is None
    free = await store.budgets.held(NO_DEFAULTS)
    assert not free.active
    ids = {c.session.id for c in [await store.queue.claim("w3", held=free) for _ in range(2)] if c}
    assert ids == {waiting.id, late.id}
