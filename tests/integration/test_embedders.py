"""Embedders for real: an OpenAI-compatible embeddings API (the fake model server), one that is
down (a closed port), wordllama offline, and which one the settings build."""

from __future__ import annotations

import logging
import math
import socket
import struct
import subprocess
import sys

import pytest
from pydantic import ValidationError

from telecoder import embedders
from telecoder.embedders import (
    WORDLLAMA_NAME,
    EmbeddingFailed,
    EndpointEmbedder,
    WordLlamaEmbedder,
    build_embedder,
)
from telecoder.masking import Masker
from telecoder.memory import recall, remember
from telecoder.settings import Settings
from telecoder.store import Store
from tests.fakes.model_server import EMBEDDING_DIM, FakeModelServer, embedding_of

A = "/repos/a"
KEY = "sk-embed-key-0123456789"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unpack(vector: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))


async def test_the_endpoint_embedder_speaks_openais_embeddings_api(model_server: FakeModelServer):
    embedder = EndpointEmbedder(model_server.url + "/v1/", "embed-small", api_key=KEY)
    assert embedder.name == "endpoint/embed-small"
    assert KEY not in repr(embedder)
    texts = ["flaky login test", "proto build", "flaky login test"]
    first, second, again = await embedder.embed(texts)
    assert first == again != second
    values = _unpack(first)
    assert len(values) == EMBEDDING_DIM
    assert math.isclose(math.fsum(x * x for x in values), 1.0, rel_tol=1e-5)
    expected = embedding_of("flaky login test")
    norm = math.sqrt(sum(x * x for x in expected))
    assert values == pytest.approx([x / norm for x in expected], abs=1e-6)
    (request,) = [r for r in model_server.requests if r.path.endswith("/embeddings")]
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {"model": "embed-small", "input": texts}


async def test_remember_and_recall_with_the_endpoint_embedder(
    store: Store, model_server: FakeModelServer
):
    embedder = EndpointEmbedder(model_server.url + "/v1", "embed-small")
    masker = Masker()
    login = await remember(
        store, masker=masker, embedder=embedder, repo=A, text="the login test waits for the form"
    )
    await remember(store, masker=masker, embedder=embedder, repo=A, text="make proto first")
    assert login.embedder == "endpoint/embed-small"
    found = await recall(store, "login form", embedder=embedder, repo=A)
    assert found[0].memory.id == login.id
    assert found[0].similarity is not None
    assert 0.3 < found[0].similarity < 1.0
    # Vectors of another model are never compared with this one's.
    other = EndpointEmbedder(model_server.url + "/v1", "embed-large")
    found = await recall(store, "login form", embedder=other, repo=A)
    assert found[0].memory.id == login.id
    assert found[0].similarity is None


async def test_a_failing_embedder_stores_without_a_vector_and_recall_still_works(
    store: Store, caplog: pytest.LogCaptureFixture
):
    down = EndpointEmbedder(f"http://127.0.0.1:{_closed_port()}/v1", "embed-small", api_key=KEY)
    secret = "hunter2-hunter2-hunter2"
    with caplog.at_level(logging.WARNING, logger="telecoder.memory"):
        stored = await remember(
            store, masker=Masker([secret]), embedder=down, repo=A,
            text=f"the login test needs PASSWORD={secret}",
        )  # fmt: skip
        # A memory the same embedder once embedded: recall has vectors to compare, so it asks.
        vector = struct.pack("<2f", 0.6, 0.8)
        await store.memories.add(
            repo=A, text="deploy notes", embedding=vector, embedder="endpoint/embed-small"
        )
        found = await recall(store, f"login test {secret}", embedder=down, repo=A)
    assert stored.embedder is None
    assert [m for m, _ in await store.memories.vectors("endpoint/embed-small", repo=A)] != [
        stored.id
    ]
    assert [r.memory.id for r in found] == [stored.id]
    assert found[0].similarity is None
    failures = [r.getMessage() for r in caplog.records if "full-text only" in r.getMessage()]
    assert len(failures) == 2
    assert "endpoint/embed-small" in failures[0]
    assert "ConnectError" in failures[0]
    assert all(secret not in r.getMessage() and KEY not in r.getMessage() for r in caplog.records)


async def test_an_endpoint_error_or_a_malformed_reply_is_an_embedding_failure(
    model_server: FakeModelServer,
):
    failing = EndpointEmbedder(model_server.url + "/err500/v1", "embed-small")
    with pytest.raises(EmbeddingFailed, match="answered 500"):
        await failing.embed(["x"])
    nameless = EndpointEmbedder(model_server.url + "/v1", "")  # the server wants a model
    with pytest.raises(EmbeddingFailed, match="answered 400"):
        await nameless.embed(["x"])
    with pytest.raises(EmbeddingFailed, match="expected 2 embeddings"):
        embedders._vectors({"data": [{"embedding": [1.0]}]}, 2)
    with pytest.raises(EmbeddingFailed, match="not embeddings"):
        embedders._vectors({"data": [{"embedding": ["a"]}]}, 1)
    with pytest.raises(EmbeddingFailed, match="finite"):
        embedders.pack([float("inf"), 1.0])
    assert embedders.pack([0.0, 0.0]) == struct.pack("<2f", 0.0, 0.0)


async def test_wordllama_embeds_offline_unit_vectors_of_256_dimensions():
    embedder = WordLlamaEmbedder()
    assert embedder.name == WORDLLAMA_NAME == "wordllama/l2_supercat_256"
    vectors = await embedder.embed(["fix the flaky login test", "the login test is flaky"])
    assert [len(v) for v in vectors] == [256 * 4, 256 * 4]
    a, b = (_unpack(v) for v in vectors)
    assert math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-4)
    assert math.fsum(x * y for x, y in zip(a, b, strict=True)) > 0.7
    assert await embedder.embed([]) == []


def test_the_settings_choose_the_embedder(monkeypatch: pytest.MonkeyPatch, tmp_path):
    assert Settings(home=tmp_path).memory_embedder == "wordllama"
    assert isinstance(build_embedder(Settings(home=tmp_path)), WordLlamaEmbedder)
    assert build_embedder(Settings(home=tmp_path, memory_embedder="None")) is None
    settings = Settings(
        home=tmp_path,
        memory_embedder="http://127.0.0.1:11434/v1/",
        memory_embedder_model="nomic-embed-text",
        memory_embedder_key_env="MY_EMBED_KEY",
    )
    built = build_embedder(settings, {"MY_EMBED_KEY": KEY})
    assert isinstance(built, EndpointEmbedder)
    assert built.url == "http://127.0.0.1:11434/v1/embeddings"
    assert built.name == "endpoint/nomic-embed-text"
    # The key's variable is masked whatever its name.
    assert KEY not in Masker.from_settings(settings, {"MY_EMBED_KEY": KEY}).text(f"key {KEY}")
    with pytest.raises(ValidationError, match="not an embedder: 'bert'"):
        Settings(home=tmp_path, memory_embedder="bert")
    with pytest.raises(ValidationError, match="TELECODER_MEMORY_EMBEDDER_MODEL"):
        Settings(home=tmp_path, memory_embedder="https://api.openai.com/v1")
    monkeypatch.setenv("TELECODER_MEMORY", "off")
    monkeypatch.setenv("TELECODER_MEMORY_TOP_K", "5")
    assert (Settings().memory, Settings().memory_top_k) == (False, 5)


def test_without_wordllama_the_default_is_full_text_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path
):
    monkeypatch.setitem(sys.modules, "wordllama", None)  # as if the extra were not installed
    monkeypatch.setattr(embedders, "_said_missing", False)
    with caplog.at_level(logging.WARNING, logger="telecoder.embedders"):
        assert build_embedder(Settings(home=tmp_path)) is None
        assert build_embedder(Settings(home=tmp_path)) is None
    said = [r.getMessage() for r in caplog.records if "not installed" in r.getMessage()]
    assert len(said) == 1
    assert "telecoder[memory]" in said[0]


def test_the_cli_does_not_import_the_embedding_model_at_start():
    code = (
        "import sys, telecoder.cli, telecoder.embedders, telecoder.memory\n"
        "print(sorted(m for m in ('wordllama', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_recall_scores_the_same_without_numpy(
    store: Store, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
):
    embedder = EndpointEmbedder(model_server.url + "/v1", "embed-small")
    masker = Masker()
    for text in ("the login test waits for the form", "make proto first", "login page moved"):
        await remember(store, masker=masker, embedder=embedder, repo=A, text=text)
    with_numpy = await recall(store, "login form test", embedder=embedder, repo=A)
    monkeypatch.setitem(sys.modules, "numpy", None)  # as if numpy were not installed
    pure = await recall(store, "login form test", embedder=embedder, repo=A)
    assert [r.memory.id for r in pure] == [r.memory.id for r in with_numpy]
    assert len(pure) == 2  # "make proto first" is related by neither words nor vector
    for a, b in zip(pure, with_numpy, strict=True):
        assert a.similarity is not None
        assert a.similarity == pytest.approx(b.similarity, abs=1e-6)
        assert a.score == b.score
