"""Per-repository memory: what finished sessions taught, found again for the next one.

CONTRACT (shared by the ``memory``, ``memory-flow`` and ``memory-surfaces`` branches; change
it only together). The ``memory`` branch implements it; the others call it.

- ``Embedder``: text to unit-length float32 vectors (little-endian bytes, as the store keeps
  them), named so vectors of different models are never compared.
- ``remember``: mask, embed (when an embedder is given and works) and store one memory.
- ``recall``: the ``k`` memories of one scope (a repository, a user) most relevant to a query:
  full-text ranks fused with vector similarity (Reciprocal Rank Fusion), or full-text alone
  when there is no embedder or it fails. Never another scope's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from telecoder.domain import Memory, MemoryKind
from telecoder.masking import Masker
from telecoder.store import Store

TOP_K = 3


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
    raise NotImplementedError


async def recall(
    store: Store,
    query: str,
    *,
    embedder: Embedder | None = None,
    repo: str | None = None,
    user: str | None = None,
    k: int = TOP_K,
) -> list[Recalled]:
    raise NotImplementedError
