"""The memories store on SQLite and PostgreSQL: scopes, full-text ranking, one summary a session,
forgetting."""

from __future__ import annotations

import struct

import pytest

from telecoder.domain import MemoryKind
from telecoder.errors import BadInput, MemoryNotFound
from telecoder.store import Store

A, B = "/repos/a", "/repos/b"


async def test_keyword_search_ranks_within_one_repository_and_never_crosses_it(store: Store):
    flaky = await store.memories.add(
        repo=A, kind=MemoryKind.SESSION, text="Fixed the flaky login test by waiting for the form",
        prompt="fix flaky login test", files=["tests/test_login.py"], session_id="s1",
    )  # fmt: skip
    await store.memories.add(repo=A, text="The build uses make proto after .proto changes")
    await store.memories.add(repo=B, text="login test flaky again; retried it")
    await store.memories.add(user="slack:U1", kind=MemoryKind.FACT, text="prefers login tests")
    found = await store.memories.keyword("why is the login test flaky", repo=A)
    assert [m.id for m, _ in found] == [flaky.id]
    assert found[0][0].files == ("tests/test_login.py",)
    assert [m.repo for m, _ in await store.memories.keyword("login", repo=B)] == [B]
    assert await store.memories.users() == [("slack:U1", 1)]
    mine = await store.memories.keyword("login tests", user="slack:U1")
    assert [m.kind for m, _ in mine] == [MemoryKind.FACT]
    assert await store.memories.keyword("!!! ???", repo=A) == []
    with pytest.raises(BadInput):
        await store.memories.keyword("login")


async def test_a_session_is_remembered_once_and_forgetting_removes_it_from_search(store: Store):
    first = await store.memories.add(repo=A, text="use uv, not pip", session_id="s9")
    again = await store.memories.add(repo=A, text="something else", session_id="s9")
    assert again.id == first.id
    assert again.text == "use uv, not pip"
    assert (await store.memories.of_session("s9")) == first
    assert [m.id for m in await store.memories.list(repo=A)] == [first.id]
    assert await store.memories.repos() == [(A, 1)]
    assert await store.memories.users() == []
    forgotten = await store.memories.forget(first.id)
    assert forgotten.text == "use uv, not pip"
    assert await store.memories.keyword("uv pip", repo=A) == []
    with pytest.raises(MemoryNotFound):
        await store.memories.get(first.id)
    with pytest.raises(MemoryNotFound):
        await store.memories.forget(first.id)


async def test_vectors_are_given_back_per_embedder_and_scope(store: Store):
    vector = struct.pack("<3f", 1.0, 0.0, 0.5)
    kept = await store.memories.add(repo=A, text="t", embedding=vector, embedder="e1")
    await store.memories.add(repo=A, text="u", embedding=vector, embedder="e2")
    await store.memories.add(repo=B, text="v", embedding=vector, embedder="e1")
    assert await store.memories.vectors("e1", repo=A) == [(kept.id, vector)]
    assert kept.embedder == "e1"
    assert "embedding" not in kept.to_dict()
    with pytest.raises(BadInput):
        await store.memories.add(repo=A, text="t", embedding=vector)
    with pytest.raises(BadInput):
        await store.memories.add(repo=A, text="   ")
    with pytest.raises(BadInput):
        await store.memories.add(text="no scope")
