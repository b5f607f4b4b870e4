"""Embedders: text to vectors, for recalling memories by meaning (``telecoder.memory``).

Two kinds, chosen by ``TELECODER_MEMORY_EMBEDDER`` (``build_embedder``):

- ``wordllama`` (the default): WordLlama's 256-dimension static embeddings, whose weights ship
  inside its wheel (the ``memory`` extra), so recall works with no network and no model
  server. A bag-of-tokens model: good enough for short session summaries, and the full-text half
  of recall makes up for what it misses. The wheel puts the tokenizer in ``tokenizers/`` where
  ``WordLlama.load()`` looks under ``cache_dir``, so it is loaded with the package directory as
  that cache and downloads disabled: it never tries the network. Loaded once a process, lazily
  (about a second, in a thread): importing this module costs nothing.
- an OpenAI-compatible ``POST {url}/embeddings`` (OpenAI, Ollama's ``/v1``, vLLM, …) the user
  configures, with a key read from the variable ``TELECODER_MEMORY_EMBEDDER_KEY_ENV`` names (the
  key itself is never a setting, so it is never stored with them).

Every vector is unit-length float32, little-endian bytes: what the store keeps, and a dot
product is then the cosine. ``name`` goes with each stored vector, so vectors of two models are
never compared.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from telecoder.memory import Embedder
from telecoder.settings import Settings

if TYPE_CHECKING:
    from wordllama import WordLlamaInference

log = logging.getLogger(__name__)

WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
WORDLLAMA_NAME = f"wordllama/{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}"
ENDPOINT_TIMEOUT = 15.0  # seconds one embeddings request may take (a session waits on it)
MAX_BATCH = 64  # texts one request embeds

_model: WordLlamaInference | None = None
_model_lock = threading.Lock()
_said_missing = False


class EmbeddingFailed(Exception):
    """The embedder gave no usable vectors (callers fall back to full-text)."""


class WordLlamaEmbedder:
    """WordLlama, offline: the weights of its wheel."""

    def __init__(self) -> None:
        self.name = WORDLLAMA_NAME

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        return await asyncio.to_thread(self._embed, list(texts))

    def _embed(self, texts: list[str]) -> list[bytes]:
        if not texts:
            return []
        rows = _wordllama().embed(texts, norm=False)
        return [pack([float(x) for x in row]) for row in rows]


def loaded(embedder: Embedder) -> bool:
    """Whether embedding with it now costs no model load: an endpoint always; WordLlama once
    this process has loaded its model."""
    return not isinstance(embedder, WordLlamaEmbedder) or _model is not None


def _wordllama() -> WordLlamaInference:
    """The process's one WordLlama model, loaded on first use."""
    global _model
    with _model_lock:
        if _model is None:
            import wordllama

            _model = wordllama.WordLlama.load(
                config=WORDLLAMA_CONFIG,
                dim=WORDLLAMA_DIM,
                cache_dir=Path(wordllama.__file__).parent,
                disable_download=True,
            )
        return _model


class EndpointEmbedder:
    """An OpenAI-compatible embeddings endpoint: ``POST {base_url}/embeddings``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = ENDPOINT_TIMEOUT,
    ) -> None:
        self.name = f"endpoint/{model}"
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self._api_key = api_key
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"EndpointEmbedder({self.url!r}, {self.model!r})"  # never the key

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        vectors: list[bytes] = []
        async with httpx.AsyncClient(timeout=self._timeout, headers=headers) as client:
            for start in range(0, len(texts), MAX_BATCH):
                batch = list(texts[start : start + MAX_BATCH])
                body = {"model": self.model, "input": batch}
                response = await client.post(self.url, json=body)
                if response.status_code != 200:
                    raise EmbeddingFailed(f"{self.url} answered {response.status_code}")
                vectors += _vectors(response.json(), len(batch))
        return vectors


def _vectors(reply: Any, count: int) -> list[bytes]:
    """The vectors of an OpenAI embeddings reply (``data[i].embedding``, in ``index`` order)."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise EmbeddingFailed(f"expected {count} embeddings in the reply's data")
    try:
        items = sorted(data, key=lambda item: int(item.get("index", 0)))
        return [pack([float(x) for x in item["embedding"]]) for item in items]
    except (AttributeError, KeyError, TypeError, ValueError):
        raise EmbeddingFailed("the reply's data are not embeddings (lists of numbers)") from None


def pack(vector: Sequence[float]) -> bytes:
    """``vector`` scaled to unit length, as float32 little-endian bytes (a zero vector stays
    zero: it is similar to nothing)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not math.isfinite(norm):
        raise EmbeddingFailed("an embedding holds a value that is not a finite number")
    scale = 1.0 / norm if norm > 0 else 0.0
    return struct.pack(f"<{len(vector)}f", *(x * scale for x in vector))


def wordllama_installed() -> bool:
    """Whether the ``memory`` extra is there (without importing it: a CLI start stays fast)."""
    return importlib.util.find_spec("wordllama") is not None


def build_embedder(settings: Settings, environ: Mapping[str, str] | None = None) -> Embedder | None:
    """The embedder the settings choose, or None: full-text recall only (``none``, or
    wordllama when it is not installed, said once in the log)."""
    global _said_missing
    choice = settings.memory_embedder
    if choice == "none":
        return None
    if choice == "wordllama":
        if wordllama_installed():
            return WordLlamaEmbedder()
        if not _said_missing:
            _said_missing = True
            log.warning(
                "memory: wordllama is not installed (pip install 'telecoder[memory]'): "
                "memories are recalled by full-text only"
            )
        return None
    env = os.environ if environ is None else environ
    key_env = settings.memory_embedder_key_env
    api_key = env.get(key_env) if key_env else None
    if key_env and not api_key:
        log.warning(
            "memory: %s is not set: the embeddings endpoint is called without a key", key_env
        )
    model = settings.memory_embedder_model or ""
    return EndpointEmbedder(choice, model, api_key=api_key)
