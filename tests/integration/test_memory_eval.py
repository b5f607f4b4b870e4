"""The seed's eval, on SQLite and PostgreSQL with the shipped embedder (wordllama, offline):
ten session summaries of repository A, five of B; a related prompt for A recalls A's related
memories first (cosine > 0.7), the unrelated ones below, and never one of B's — even when B
holds the same text. Without an embedder, full-text alone still finds them."""

from __future__ import annotations

import pytest

from telecoder.domain import Memory, MemoryKind
from telecoder.embedders import WORDLLAMA_NAME, WordLlamaEmbedder
from telecoder.masking import Masker
from telecoder.memory import recall, remember
from telecoder.store import Store

A, B = "/repos/a", "/repos/b"
FLAKY = (
    "The login test waited a fixed 2 seconds for the login form; it now waits for the form to "
    "appear. Flaky no more."
)
SUMMARIES_A = {
    "fix the flaky login test": FLAKY,
    "make proto build work after adding a field": (
        "Run make proto after changing any .proto file, or the generated code is stale."
    ),
    "add a database migration for the orders table": (
        "Added an Alembic migration; never edit an old migration, add a new revision."
    ),
    "speed up the CI cache": (
        "The CI pip cache key now includes the hash of requirements.txt, so CI stops reusing "
        "stale wheels."
    ),
    "upgrade React to 18": "Replaced ReactDOM.render with createRoot; tests needed act() wrappers.",
    "add dark mode to the settings page": "CSS variables for colours, toggled by a class on body.",
    "fix the memory leak in the image resizer": "The worker leaked: PIL images were never closed.",
    "rate limit the public API": "A token bucket per API key; 429 with Retry-After when empty.",
    "translate the README into Spanish": "Added README.es.md and a language switcher at the top.",
    "shrink the Docker image": "Multi-stage build: the final image is 80 MB smaller.",
}
SUMMARIES_B = {
    "fix the flaky login test": FLAKY,  # the same text, in another repository
    "add a readiness probe": "The Kubernetes readiness probe now checks /healthz.",
    "structured logs": "Switched logging to JSON lines with a request id.",
    "the login test is flaky": "A race in the session fixture; the login test retries once.",
    "bump Go": "Bumped the Go toolchain to 1.22 and fixed the vet warnings.",
}
# A prompt for A, and the prompt of the summary it is about.
QUERIES = {
    "the login test is flaky again": "fix the flaky login test",
    "add a migration for the users table": "add a database migration for the orders table",
    "the CI cache is slow": "speed up the CI cache",
}


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()  # the model itself is loaded once a process


async def _seed(store: Store, embedder: WordLlamaEmbedder | None) -> dict[str, Memory]:
    masker = Masker()
    stored = {}
    for n, (prompt, text) in enumerate(SUMMARIES_A.items()):
        stored[prompt] = await remember(
            store, masker=masker, embedder=embedder, repo=A, kind=MemoryKind.SESSION,
            text=text, prompt=prompt, outcome="succeeded", session_id=f"a{n}",
        )  # fmt: skip
    for n, (prompt, text) in enumerate(SUMMARIES_B.items()):
        await remember(
            store, masker=masker, embedder=embedder, repo=B, kind=MemoryKind.SESSION,
            text=text, prompt=prompt, outcome="succeeded", session_id=f"b{n}",
        )  # fmt: skip
    return stored


async def test_a_related_prompt_recalls_its_repositorys_memories_by_meaning(
    store: Store, wordllama: WordLlamaEmbedder
):
    stored = await _seed(store, wordllama)
    assert {m.embedder for m in stored.values()} == {WORDLLAMA_NAME}
    for query, about in QUERIES.items():
        found = await recall(store, query, embedder=wordllama, repo=A, k=3)
        assert found, query
        assert all(r.memory.repo == A for r in found), query
        best = found[0]
        assert best.memory.id == stored[about].id, query
        assert best.similarity is not None
        assert best.similarity > 0.7, (query, best.similarity)
        for other in found[1:]:
            assert other.score < best.score
            assert other.similarity is not None
            assert other.similarity < 0.5, (query, other.memory.prompt, other.similarity)
    # The flaky login test is B's too, word for word: never recalled for A, nor A's for B.
    for_a = await recall(store, "the login test is flaky again", embedder=wordllama, repo=A, k=15)
    assert {r.memory.repo for r in for_a} == {A}
    for_b = await recall(store, "the login test is flaky again", embedder=wordllama, repo=B, k=15)
    assert {r.memory.repo for r in for_b} == {B}
    assert [r.memory.prompt for r in for_b[:2]] == [
        "fix the flaky login test",
        "the login test is flaky",
    ]


async def test_vectors_find_a_memory_that_shares_no_word_with_the_prompt(
    store: Store, wordllama: WordLlamaEmbedder
):
    stored = await _seed(store, wordllama)
    query = "container too big"  # "Docker image" by meaning, no word in common
    assert await recall(store, query, repo=A) == []
    found = await recall(store, query, embedder=wordllama, repo=A, k=1)
    assert [r.memory.id for r in found] == [stored["shrink the Docker image"].id]


async def test_without_an_embedder_full_text_alone_still_finds_them(store: Store):
    stored = await _seed(store, None)
    assert {m.embedder for m in stored.values()} == {None}
    for query, about in QUERIES.items():
        found = await recall(store, query, repo=A, k=3)
        assert found[0].memory.id == stored[about].id, query
        assert found[0].similarity is None
        assert all(r.memory.repo == A for r in found)


async def test_memories_stored_without_vectors_are_still_recalled_with_an_embedder(
    store: Store, wordllama: WordLlamaEmbedder
):
    stored = await _seed(store, None)  # remembered while no embedder was installed
    found = await recall(store, "the login test is flaky again", embedder=wordllama, repo=A)
    assert found[0].memory.id == stored["fix the flaky login test"].id
    assert found[0].similarity is None
