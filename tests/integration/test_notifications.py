"""Notifications out: subscriptions, the outbox and the deliverer, against a real receiver on
127.0.0.1 and the real store (SQLite and PostgreSQL). Signatures are checked by the reference
Standard Webhooks implementation in the receiver."""

from __future__ import annotations

import asyncio
import logging

import pytest

from telecoder import registry
from telecoder.deliverer import Deliverer, Policy
from telecoder.domain import FailureKind, NewSession, SessionStatus
from telecoder.server import create_app
from telecoder.store import Outcome, open_store
from tests.fakes.receiver import Receiver
from tests.server import FakeRun, client, until

FAST = {
    "notify_poll_seconds": 0.02,
    "notify_backoff_seconds": 0.05,
    "notify_backoff_max_seconds": 0.2,
    "notify_timeout_seconds": 2.0,
}


@pytest.fixture
def fast(settings):
    return settings.model_copy(update=FAST)


async def wait_until(check, seconds=10.0):
    """Poll an async check of the database (which sends no signal to wait on)."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def queue(store, prompt="echo hi"):
    return await store.sessions.create(NewSession(repo="/r", prompt=prompt, engine="shell"))


async def make_events(store):
    """One session of each kind of ending: finished, failed, needs_input, cancelled."""
    ids = {}
    await queue(store, "will succeed")
    run = await FakeRun.start(store)
    await run.finish(SessionStatus.SUCCEEDED)
    ids["finished"] = run.session_id
    await queue(store, "will fail")
    run = await FakeRun.start(store)
    failed = Outcome(
        status=SessionStatus.FAILED, failure_kind=FailureKind.ENGINE_ERROR, retryable=False
    )
    await store.queue.finish(run.claimed.lease, failed)
    ids["failed"] = run.session_id
    await queue(store, "will wait")
    run = await FakeRun.start(store)
    await run.finish(SessionStatus.BLOCKED)
    ids["needs_input"] = run.session_id
    cancelled = await queue(store, "will be cancelled")
    await store.sessions.cancel(cancelled.id)
    ids["cancelled"] = cancelled.id
    return ids


async def test_a_subscriber_that_is_down_gets_every_event_once_after_a_restart(fast, store, db_url):
    receiver = Receiver()
    receiver.start()
    receiver.stop()  # its port is known, and refuses connections: the subscriber is down
    sub = await store.subscriptions.add(receiver.url, ["all"])
    receiver.secret = sub.secret

    app = create_app(fast, store)
    async with client(app):
        ids = await make_events(store)

        async def tried_twice():
            rows = await store.outbox.recent()
            return len(rows) == 4 and all(r.tries >= 2 for r in rows)

        await wait_until(tried_twice)
    rows = await store.outbox.recent()
    assert {r.state.value for r in rows} == {"pending"}
    assert all("ConnectError" in (r.last_error or "") for r in rows)

    # The server restarts (a new store, app and deliverer over the same database) and the
    # subscriber comes back.
    await store.close()
    again = await open_store(db_url, lease_seconds=5)
    try:
        with receiver:
            async with client(create_app(fast, again)):
                await until(lambda: len(receiver.verified) == 4, seconds=15)
                await asyncio.sleep(0.3)  # time for a duplicate to show, were there one
        rows = await again.outbox.recent()
    finally:
        await again.close()
    assert receiver.rejected == []
    assert all(len(bodies) == 1 for bodies in receiver.verified.values())
    got = {b[0]["data"]["session"]["id"]: b[0]["type"] for b in receiver.verified.values()}
    assert got == {
        ids["finished"]: "session.finished",
        ids["failed"]: "session.failed",
        ids["needs_input"]: "session.needs_input",
        ids["cancelled"]: "session.failed",
    }
    assert {r.state.value for r in rows} == {"delivered"}
    assert all(r.last_status == 200 for r in rows)


async def test_two_deliverers_never_send_one_row_twice(fast, store, db_url):
    with Receiver() as receiver:
        sub = await store.subscriptions.add(receiver.url, ["all"])
        receiver.secret = sub.secret
        for _ in range(6):
            await queue(store)
            await (await FakeRun.start(store)).finish()
        other = await open_store(db_url, lease_seconds=5)
        stop = asyncio.Event()
        policy = Policy(poll_seconds=0.01, timeout=2)
        try:
            tasks = [
                asyncio.create_task(Deliverer(s, policy=policy).run(stop)) for s in (store, other)
            ]
            await until(lambda: len(receiver.verified) == 6, seconds=10)
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            await other.close()
    assert len(receiver.received) == 6
    assert all(len(bodies) == 1 for bodies in receiver.verified.values())


async def test_events_filter_what_a_subscription_hears(fast, store):
    with Receiver() as receiver:
        sub = await store.subscriptions.add(receiver.url, ["failed"])
        receiver.secret = sub.secret
        async with client(create_app(fast, store)):
            ids = await make_events(store)
            await until(lambda: len(receiver.verified) == 2, seconds=10)
            await asyncio.sleep(0.2)
    sessions = {b[0]["data"]["session"]["id"] for b in receiver.verified.values()}
    assert sessions == {ids["failed"], ids["cancelled"]}


async def test_a_notification_fails_for_good_after_its_last_try(fast, store):
    with Receiver(status=500) as receiver:
        await store.subscriptions.add(receiver.url, ["finished"])
        settings = fast.model_copy(update={"notify_max_tries": 3})
        async with client(create_app(settings, store)):
            await queue(store)
            await (await FakeRun.start(store)).finish()

            async def failed():
                rows = await store.outbox.recent()
                return bool(rows) and rows[0].state.value == "failed"

            await wait_until(failed)
    (row,) = await store.outbox.recent()
    assert (row.tries, row.last_status) == (3, 500)
    assert len(receiver.received) == 3
    # The same webhook-id on every try, so a subscriber can drop duplicates.
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


async def test_in_process_subscribers_hear_events_and_their_failures_break_nothing(
    fast, store, caplog
):
    heard: list[dict] = []

    def broken(_event):
        raise RuntimeError("this subscriber is broken")

    async def good(event):
        heard.append(event)

    removers = [
        registry.register("subscribers", "a-broken", lambda: broken),
        registry.register("subscribers", "b-good", lambda: good),
    ]
    try:
        with caplog.at_level(logging.ERROR, logger="telecoder.deliverer"):
            async with client(create_app(fast, store)):
                await queue(store)
                run = await FakeRun.start(store)
                await run.finish()
                await until(lambda: len(heard) == 1, seconds=10)
    finally:
        for remove in removers:
            remove()
    assert heard[0]["type"] == "session.finished"
    assert heard[0]["data"]["session"]["id"] == run.session_id
    assert (await store.sessions.get(run.session_id)).status == SessionStatus.SUCCEEDED
    assert "the subscriber 'a-broken' failed" in caplog.text


async def test_subscriptions_api(fast, store):
    async with client(create_app(fast, store)) as c:
        made = await c.post(
            "/api/subscriptions", json={"url": "http://127.0.0.1:9/x", "events": ["finished"]}
        )
        assert made.status_code == 201, made.text
        assert made.json()["secret"].startswith("whsec_")
        listed = await c.get("/api/subscriptions")
        assert listed.json() == [
            {k: v for k, v in made.json().items() if k != "secret"}
        ]  # the secret is shown once
        bad = await c.post("/api/subscriptions", json={"url": "http://x", "events": ["nope"]})
        assert bad.status_code == 422
        assert "unknown event" in bad.json()["detail"]
        gone = await c.delete(f"/api/subscriptions/{made.json()['id']}")
        assert gone.status_code == 204
        missing = await c.delete(f"/api/subscriptions/{made.json()['id']}")
        assert missing.status_code == 404
        assert (await c.get("/api/subscriptions")).json() == []
        deliveries = await c.get("/api/subscriptions/deliveries")
        assert deliveries.status_code == 200


async def test_the_dashboard_shows_recent_deliveries(fast, store):
    with Receiver() as receiver:
        sub = await store.subscriptions.add(receiver.url, ["all"])
        receiver.secret = sub.secret
        async with client(create_app(fast, store)) as c:
            await queue(store)
            run = await FakeRun.start(store)
            await run.finish()
            await until(lambda: len(receiver.verified) == 1, seconds=10)
            await asyncio.sleep(0.1)
            page = await c.get("/deliveries")
    assert page.status_code == 200
    assert receiver.url in page.text
    assert run.session_id in page.text
    assert "delivered" in page.text
    assert "HTTP 200" in page.text
    assert sub.secret not in page.text


async def test_old_finished_rows_are_pruned_and_pending_ones_kept(store):
    await store.subscriptions.add("http://127.0.0.1:9/down", ["all"])
    await queue(store)
    await (await FakeRun.start(store)).finish()
    holder = "pruner-test"
    claimed = await store.outbox.claim(holder, lease_seconds=30)
    local = next(d for d in claimed if d.subscription_id is None)
    assert await store.outbox.delivered(holder, local.id, None)
    await asyncio.sleep(0.05)
    assert await store.outbox.prune(0.01) == 1
    (left,) = await store.outbox.recent(local=True)
    assert left.state.value == "pending"
