"""Per-repository memory: what finished sessions taught, found again for the next one.

CONTRACT (shared by the ``memory``, ``memory-flow`` and ``memory-surfaces`` branches; change
it only together). The ``memory`` branch implements it; the others call it.

- ``Embedder``: text to unit-length float32 vectors (little-endian bytes, as the store keeps
  them), named so vectors of different models are never compared.
- ``remember``: mask, embed (when an embedder is given and works) and store one memory.
- ``backfill``: embed a bounded batch of a scope's memories stored without a vector.
- ``recall``: the ``k`` memories of one scope (a repository, a user) most relevant to a query:
  full-text ranks fused with vector similarity (Reciprocal Rank Fusion), or full-text alone
  when there is no embedder or it fails. Never another scope's.

How recall ranks (as TeleCoder Go's retriever did): ``3 × k`` candidates by full-text and
``3 × k`` by cosine similarity (brute force over the scope's vectors: a repository holds
hundreds of memories, not millions), each memory scored ``Σ 1 / (60 + rank)`` over the lists it
is in. Reciprocal Rank Fusion needs no calibration between BM25 scores and cosines, which are
not comparable; a memory both lists agree on wins. A vector candidate below ``MIN_SIMILARITY``
is dropped: with few memories every one is somebody's nearest neighbour, and an unrelated
memory in an agent's prompt is noise. An empty query recalls the scope's newest ``k``: there
is nothing to rank by, and the latest sessions are the likeliest to matter.

An embedder is optional at every step: one that fails (an endpoint down, a model missing) costs
the vector half of the ranking, never the caller's session.
"""

from __future__ import annotations

import logging
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from telecoder.domain import Memory, MemoryKind
from telecoder.errors import BadInput
from telecoder.masking import Masker
from telecoder.store import Store
from telecoder.store.memories import MAX_LIST

TOP_K = 3
RRF_K = 60  # Reciprocal Rank Fusion's constant (the value of the paper and of TeleCoder Go)
CANDIDATES = 3  # each ranking hands over this many times k candidates
MIN_SIMILARITY = 0.2  # below it a vector neighbour is not related, only nearest
BACKFILL = 32  # memories without a vector embedded at once by ``backfill``

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str  # stored with each vector (``embedder``): e.g. ``wordllama/l2_supercat_256``

    async def embed(self, texts: Sequence[str]) -> list[bytes]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Recalled:
    memory: Memory
    score: float  # the fused score (higher is better; comparable within one recall)
    similarity: float | None  # cosine similarity to the query, when both have vectors


async def remember(
    store: Store,
    *,
    text: str,
    masker: Masker,
    embedder: Embedder | None = None,
    repo: str | None = None,
    user: str | None = None,
    kind: MemoryKind = MemoryKind.NOTE,
    prompt: str | None = None,
    outcome: str | None = None,
    files: Sequence[str] = (),
    session_id: str | None = None,
) -> Memory:
    """Store one memory, masked as events are; with an embedder that works, with its vector."""
    text = masker.text(text)
    prompt = None if prompt is None else masker.text(prompt)
    outcome = None if outcome is None else masker.text(outcome)
    files = [masker.text(f) for f in files]
    embedding: bytes | None = None
    embedded_by: str | None = None
    if embedder is not None and text.strip():
        vectors = await _embed(embedder, ["\n".join(t for t in (prompt, text) if t)])
        if vectors:
            embedding, embedded_by = vectors[0], embedder.name
    return await store.memories.add(
        text=text,
        repo=repo,
        user=user,
        kind=kind,
        prompt=prompt,
        outcome=outcome,
        files=files,
        session_id=session_id,
        embedding=embedding,
        embedder=embedded_by,
    )


async def recall(
    store: Store,
    query: str,
    *,
    embedder: Embedder | None = None,
    repo: str | None = None,
    user: str | None = None,
    k: int = TOP_K,
) -> list[Recalled]:
    """The ``k`` memories of the scope most relevant to ``query``, best first."""
    if k < 1:
        raise BadInput("recall needs k of at least 1")
    if repo is None and user is None:
        raise BadInput("a memory belongs to a repository or a user: name one")
    if not query.strip():
        return await _newest(store, repo=repo, user=user, k=k)
    wanted = CANDIDATES * k
    by_words = await store.memories.keyword(query, repo=repo, user=user, limit=wanted)
    found = {memory.id: memory for memory, _ in by_words}
    rankings = [[memory.id for memory, _ in by_words]]
    similarity: dict[int, float] = {}
    # The query is embedded only when the scope has vectors to compare it with: a repository
    # with no memories yet costs no model load (about a second, once a process).
    stored = (
        []
        if embedder is None
        else await store.memories.vectors(embedder.name, repo=repo, user=user)
    )
    if embedder is not None and stored:
        vectors = await _embed(embedder, [query])
        if vectors:
            similarity = _cosines(vectors[0], stored)
            near = sorted(similarity, key=lambda i: (-similarity[i], -i))
            rankings.append([i for i in near[:wanted] if similarity[i] >= MIN_SIMILARITY])
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, memory_id in enumerate(ranking, start=1):
            fused[memory_id] = fused.get(memory_id, 0.0) + 1.0 / (RRF_K + rank)
    best = sorted(fused, key=lambda i: (-fused[i], -similarity.get(i, -1.0), -i))[:k]
    missing = [i for i in best if i not in found]
    if missing:
        found.update(await store.memories.many(missing))
    return [
        Recalled(memory=found[i], score=fused[i], similarity=similarity.get(i))
        for i in best
        if i in found  # forgotten between the two reads
    ]


async def backfill(
    store: Store,
    embedder: Embedder,
    *,
    repo: str | None = None,
    user: str | None = None,
    limit: int = BACKFILL,
) -> int:
    """Embed up to ``limit`` of the scope's memories stored without a vector (a one-shot
    process stores without one rather than load a model for it); how many got one."""
    missing = await store.memories.unembedded(repo=repo, user=user, limit=limit)
    if not missing:
        return 0
    texts = ["\n".join(t for t in (m.prompt, m.text) if t) for m in missing]
    vectors = await _embed(embedder, texts)
    for found, vector in zip(missing, vectors, strict=False):
        await store.memories.embed(found.id, vector, embedder.name)
    return len(vectors)


async def _newest(store: Store, *, repo: str | None, user: str | None, k: int) -> list[Recalled]:
    """The scope's newest ``k`` (exactly the scope: a repository's, not its users')."""
    recent = await store.memories.list(repo=repo, user=user, limit=MAX_LIST)
    exact = [m for m in recent if m.repo == repo and m.user == user][:k]
    return [Recalled(memory=m, score=0.0, similarity=None) for m in exact]


async def _embed(embedder: Embedder, texts: Sequence[str]) -> list[bytes]:
    """The embedder's vectors, or none when it fails (logged without the texts: they may be
    a user's words, and the error may echo them)."""
    try:
        vectors = await embedder.embed(texts)
    except Exception as exc:  # any failure of the embedder means: no vectors
        log.warning(
            "memory: the embedder %s failed (%s); full-text only", embedder.name, type(exc).__name__
        )
        return []
    if len(vectors) != len(texts) or not all(vectors):
        log.warning(
            "memory: the embedder %s returned no usable vectors; full-text only", embedder.name
        )
        return []
    return list(vectors)


def _cosines(query: bytes, stored: Sequence[tuple[int, bytes]]) -> dict[int, float]:
    """Cosine similarity of ``query`` to each stored vector of the same length (float32
    little-endian), with numpy when it is installed, else in pure Python."""
    rows = [(i, v) for i, v in stored if len(v) == len(query)]
    if not rows or not query:
        return {}
    try:
        import numpy as np
    except ImportError:
        q = _floats(query)
        q_norm = math.sqrt(sum(x * x for x in q)) or 1.0
        result = {}
        for memory_id, blob in rows:
            v = _floats(blob)
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            result[memory_id] = sum(a * b for a, b in zip(q, v, strict=True)) / (q_norm * norm)
        return result
    q_vec = np.frombuffer(query, dtype="<f4").astype(np.float64)
    matrix = np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").astype(np.float64)
    matrix = matrix.reshape(len(rows), -1)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q_vec) or 1.0)
    scores = matrix @ q_vec / np.where(norms == 0, 1.0, norms)
    return {memory_id: float(s) for (memory_id, _), s in zip(rows, scores, strict=True)}


def _floats(blob: bytes) -> array[float]:
    values = array("f", blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values
