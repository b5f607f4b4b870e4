"""A one-shot process (`telecoder run`) stores its session's memory without loading the
embedding model; a long-lived one (a worker) gives that memory its vector later.

Through the real worker and pipeline, the ``shell`` engine, the shipped WordLlama embedder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from telecoder import embedders, memory
from telecoder.assemble import build_worker
from telecoder.domain import NewSession, SessionStatus
from telecoder.embedders import WORDLLAMA_NAME, WordLlamaEmbedder
from telecoder.masking import Masker
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import make_repo
from tests.integration.test_engine_shell import execute


async def test_a_one_shot_run_stores_without_the_model_and_a_worker_backfills(
    settings: Settings, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another test in this process may have loaded the model: start as a fresh process does.
    monkeypatch.setattr(embedders, "_model", None)
    repo = make_repo(tmp_path, "a")
    one_shot = build_worker(settings, store, one_shot=True)
    new = NewSession(repo=str(repo.path), prompt="echo the login test is flaky", engine="shell")
    done = await execute(one_shot, store, new)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    stored = await store.memories.of_session(done.id)
    assert stored is not None
    assert stored.embedder is None  # full-text only, for now
    assert embedders._model is None  # the model was never loaded
    assert [m.id for m in await store.memories.unembedded(repo=str(repo.path))] == [stored.id]

    # A worker's next session in the repository embeds it (and its own memory at once).
    worker = build_worker(settings, store)
    again = NewSession(repo=str(repo.path), prompt="echo fix the login test", engine="shell")
    finished = await execute(worker, store, again)
    assert finished.status == SessionStatus.SUCCEEDED, finished.error
    assert (await store.memories.get(stored.id)).embedder == WORDLLAMA_NAME
    its_own = await store.memories.of_session(finished.id)
    assert its_own is not None
    assert its_own.embedder == WORDLLAMA_NAME
    assert await store.memories.unembedded(repo=str(repo.path)) == []
    # Recalled by meaning now.
    [best, *_] = await memory.recall(
        store, "flaky login test", embedder=WordLlamaEmbedder(), repo=str(repo.path)
    )
    assert best.similarity is not None


async def test_backfill_is_bounded_and_keeps_a_vector_made_meanwhile(store: Store) -> None:
    masker = Masker()
    for n in range(5):
        await memory.remember(store, text=f"note {n} about the build", masker=masker, repo="r")
    embedder = WordLlamaEmbedder()
    assert await memory.backfill(store, embedder, repo="r", limit=2) == 2
    assert len(await store.memories.unembedded(repo="r")) == 3
    assert await memory.backfill(store, embedder, repo="r") == 3
    assert await memory.backfill(store, embedder, repo="r") == 0
    assert await store.memories.unembedded(user="someone") == []
    vectors = dict(await store.memories.vectors(WORDLLAMA_NAME, repo="r"))
    first = min(vectors)
    await store.memories.embed(first, b"\0" * 8, "other")  # it has one: left as it is
    assert dict(await store.memories.vectors(WORDLLAMA_NAME, repo="r"))[first] == vectors[first]
