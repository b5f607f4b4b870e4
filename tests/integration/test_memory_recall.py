"""remember and recall on SQLite and PostgreSQL: masked before stored, ranked within one scope,
the newest when the query is empty."""

from __future__ import annotations

import pytest

from telecoder.domain import MemoryKind
from telecoder.errors import BadInput
from telecoder.masking import Masker
from telecoder.memory import recall, remember
from telecoder.store import Store

A, B = "/repos/a", "/repos/b"
SECRET = "sk-live-0123456789abcdef"


async def test_a_secret_known_to_the_masker_never_reaches_the_store(store: Store):
    masker = Masker([SECRET])
    stored = await remember(
        store, masker=masker, repo=A, kind=MemoryKind.SESSION, session_id="s1",
        text=f"Set OPENAI_API_KEY={SECRET} then the login test passed",
        prompt=f"use the key {SECRET}", outcome=f"succeeded with {SECRET}",
        files=[f"notes/{SECRET}.txt"],
    )  # fmt: skip
    row = await store.memories.get(stored.id)
    for value in (row.text, row.prompt, row.outcome, *row.files):
        assert value is not None
        assert SECRET not in value
        assert "***" in value
    assert row.embedder is None
    (found,) = await recall(store, "login test", repo=A)
    assert found.memory.id == stored.id
    assert found.similarity is None


async def test_full_text_recall_stays_in_its_scope_and_ranks_the_related_first(store: Store):
    masker = Masker()
    flaky = "The flaky login test waits for the form now"
    related = await remember(store, masker=masker, repo=A, text=flaky)
    await remember(store, masker=masker, repo=A, text="Run make proto after editing .proto files")
    await remember(store, masker=masker, repo=A, text="The login page moved to /auth")
    await remember(store, masker=masker, repo=B, text=flaky)
    await remember(store, masker=masker, repo=A, user="slack:U1", text="flaky login test fan")
    found = await recall(store, "why is the login test flaky?", repo=A, k=2)
    assert len(found) == 2
    assert found[0].memory.id == related.id
    assert found[0].score > found[1].score
    assert all(r.memory.repo == A and r.memory.user is None for r in found)
    assert await recall(store, "kubernetes helm chart", repo=A) == []
    mine = await recall(store, "flaky login", repo=A, user="slack:U1")
    assert [r.memory.text for r in mine] == ["flaky login test fan"]


async def test_an_empty_query_recalls_the_scopes_newest(store: Store):
    masker = Masker()
    ids = [(await remember(store, masker=masker, repo=A, text=f"memory {n}")).id for n in range(5)]
    await remember(store, masker=masker, repo=B, text="newer, elsewhere")
    await remember(store, masker=masker, repo=A, user="slack:U1", text="newer, someone's")
    found = await recall(store, "  ", repo=A, k=3)
    assert [r.memory.id for r in found] == ids[::-1][:3]


async def test_recall_refuses_no_scope_and_a_k_below_one(store: Store):
    with pytest.raises(BadInput, match="repository or a user"):
        await recall(store, "login")
    with pytest.raises(BadInput, match="k of at least 1"):
        await recall(store, "login", repo=A, k=0)
