"""The inbox store on SQLite and PostgreSQL: claims, leases, read cursors, artifacts."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from telecoder.domain import MessageKind, MessageStatus
from telecoder.errors import BadInput, Conflict, LeaseLost, MessageNotFound, TimedOut
from telecoder.store import Store


async def test_one_of_two_claimers_wins_and_an_expired_claim_is_free_again(store: Store):
    sent = await store.inbox.send(sender="lead", recipient="w1", body="build it")
    assert sent.status == MessageStatus.OPEN
    assert sent.thread.startswith("th_")
    results = await asyncio.gather(
        store.inbox.claim(sent.id, "w1", lease=0.3),
        store.inbox.claim(sent.id, "w2", lease=0.3),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(won) == 1
    assert len(lost) == 1
    holder = won[0].claimed_by
    other = "w2" if holder == "w1" else "w1"
    assert "claimed by " + holder in lost[0].message
    await store.inbox.update(sent.id, holder, "half way")
    await asyncio.sleep(0.4)
    assert (await store.inbox.get(sent.id)).status == MessageStatus.OPEN
    with pytest.raises(LeaseLost):
        await store.inbox.renew(sent.id, holder, lease=5)
    taken = await store.inbox.claim(sent.id, other, lease=5)
    assert taken.claimed_by == other
    assert taken.progress == "half way"
    with pytest.raises(Conflict):
        await store.inbox.finish(sent.id, holder, MessageStatus.DONE)
    done = await store.inbox.finish(sent.id, other, MessageStatus.DONE, "shipped")
    assert done.status == MessageStatus.DONE
    assert done.note == "shipped"
    with pytest.raises(Conflict):
        await store.inbox.claim(sent.id, holder, lease=5)


async def test_fetch_and_replies_share_one_cursor_and_skip_nothing(store: Store):
    first = await store.inbox.send(sender="lead", recipient="w", body="one")
    asked = await store.inbox.send(sender="w", recipient="lead", body="which db?")
    answer = await store.inbox.reply(asked.id, sender="lead", body="postgres")
    assert answer.recipient == "w"
    assert answer.thread == asked.thread
    assert answer.kind == MessageKind.REPLY
    assert answer.reply_to == asked.id
    # The reply is shown first, out of order; fetch still shows the older message, once.
    assert [m.id for m in await store.inbox.unread_replies("w")] == [answer.id]
    assert await store.inbox.unread_replies("w") == []
    assert [m.id for m in await store.inbox.fetch("w")] == [first.id]
    assert await store.inbox.fetch("w") == []
    later = await store.inbox.send(sender="lead", recipient="w", body="two")
    assert [m.id for m in await store.inbox.fetch("w")] == [later.id]


async def test_artifacts_are_stored_whole_with_their_checksum(store: Store):
    content = b"\x00binary\xff" * 100
    sent = await store.inbox.send(
        sender="a", recipient="b", body="see file", artifacts=[("out.bin", content)]
    )
    (artifact,) = sent.artifacts
    assert artifact.sha256 == hashlib.sha256(content).hexdigest()
    assert artifact.size == len(content)
    assert await store.inbox.artifact(sent.id, "out.bin") == content
    with pytest.raises(MessageNotFound):
        await store.inbox.artifact(sent.id, "missing")
    with pytest.raises(MessageNotFound):
        await store.inbox.get(10_000)
    with pytest.raises(BadInput):
        await store.inbox.send(sender="", body="x")
    with pytest.raises(BadInput):
        await store.inbox.claim(sent.id, "b", lease=0)


async def test_wait_returns_what_lands_and_times_out_otherwise(store: Store):
    asked = await store.inbox.send(sender="w", recipient="lead", body="?")

    async def answer_later() -> None:
        await asyncio.sleep(0.3)
        await store.inbox.reply(asked.id, sender="lead", body="yes")

    async def probe():
        return await store.inbox.unread_replies("w", reply_to=asked.id) or None

    task = asyncio.create_task(answer_later())
    (got,) = await store.inbox.wait(probe, seconds=5, what="reply")
    await task
    assert got.body == "yes"
    with pytest.raises(TimedOut, match=r"no reply within 0\.3 s"):
        await store.inbox.wait(probe, seconds=0.3, what="reply")
