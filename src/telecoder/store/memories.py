"""Memories: stored, listed, forgotten, and searched by their words.

A memory belongs to a repository (``repo``, the string sessions name it by) or to a user
(``user``). Search never crosses that line: every query names its scope, and a query with
neither is refused. ``keyword`` ranks by full-text search (SQLite FTS5 ``bm25``, PostgreSQL
``ts_rank_cd``); ``vectors`` hands the stored embeddings of a scope to the caller, who scores
them (there is no vector index on either backend here: brute force over a repository's
memories takes well under a millisecond).

A session's summary is stored once: ``add`` with a ``session_id`` already stored returns the
memory stored then (a retried attempt remembers nothing twice).
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Memory, MemoryKind
from telecoder.errors import BadInput, MemoryNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import memories

MAX_TEXT = 20_000  # characters of a memory's text
MAX_LIST = 1_000
_WORD = re.compile(r"\w+", re.UNICODE)
# Words that match everything (PostgreSQL's english configuration drops them itself; FTS5 would
# rank a memory up for sharing "the" with the query).
_STOPWORDS = (
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "me my no not of on or our so that the their then there these this to was we were what "
    "when where which who why will with you your"
)
_STOP = frozenset(_STOPWORDS.split())
_COLUMNS = [c for c in memories.c if c.name != "embedding"]
# The text PostgreSQL searches: the expression of the GIN index migration 0014 made (the same
# expression, so the index serves the query).
PG_DOCUMENT = "to_tsvector('english', text || ' ' || coalesce(prompt, '') || ' ' || files)"


class Memories:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self,
        *,
        text: str,
        repo: str | None = None,
        user: str | None = None,
        kind: MemoryKind = MemoryKind.NOTE,
        prompt: str | None = None,
        outcome: str | None = None,
        files: Sequence[str] = (),
        session_id: str | None = None,
        embedding: bytes | None = None,
        embedder: str | None = None,
    ) -> Memory:
        """Store a memory (its text already masked); for a ``session_id`` stored before, the
        memory stored then."""
        _scope(repo, user)
        text = text.strip()
        if not text:
            raise BadInput("a memory needs some text")
        if len(text) > MAX_TEXT:
            raise BadInput(f"the memory is {len(text)} characters long; at most {MAX_TEXT}")
        if (embedding is None) != (embedder is None):
            raise BadInput("an embedding needs the name of its embedder, and the other way round")
        values = {
            "repo": repo,
            "user": user,
            "kind": kind.value,
            "text": text,
            "prompt": prompt,
            "outcome": outcome,
            "files": dumps(list(files)),
            "session_id": session_id,
            "embedding": embedding,
            "embedder": embedder,
            "created_at": time.time(),
        }
        try:
            async with self._db.write() as conn:
                result = await conn.execute(memories.insert().values(**values))
                (new_id,) = result.inserted_primary_key or (0,)
                return await _one(conn, int(new_id or 0))
        except IntegrityError:
            if session_id is None:
                raise
            async with self._db.read() as conn:
                query = select(*_COLUMNS).where(memories.c.session_id == session_id)
                row = (await conn.execute(query)).first()
            if row is None:
                raise
            return _memory(row)

    async def get(self, memory_id: int) -> Memory:
        async with self._db.read() as conn:
            return await _one(conn, memory_id)

    async def of_session(self, session_id: str) -> Memory | None:
        query = select(*_COLUMNS).where(memories.c.session_id == session_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _memory(row)

    async def list(
        self,
        *,
        repo: str | None = None,
        user: str | None = None,
        kind: MemoryKind | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[Memory]:
        """A scope's memories, newest first (``before``: ids below it, for paging). With neither
        ``repo`` nor ``user``: everyone's (the operator's view)."""
        if not 1 <= limit <= MAX_LIST:
            raise BadInput(f"the limit must be between 1 and {MAX_LIST}")
        query = select(*_COLUMNS).order_by(memories.c.id.desc()).limit(limit)
        if repo is not None:
            query = query.where(memories.c.repo == repo)
        if user is not None:
            query = query.where(memories.c.user == user)
        if kind is not None:
            query = query.where(memories.c.kind == kind.value)
        if before is not None:
            query = query.where(memories.c.id < before)
        async with self._db.read() as conn:
            return [_memory(row) for row in (await conn.execute(query)).all()]

    async def repos(self) -> builtins.list[tuple[str, int]]:
        """Each repository that has memories, with how many."""
        count = func.count().label("n")
        query = (
            select(memories.c.repo, count)
            .where(memories.c.repo.is_not(None))
            .group_by(memories.c.repo)
            .order_by(memories.c.repo)
        )
        async with self._db.read() as conn:
            return [(str(r.repo), int(r.n)) for r in (await conn.execute(query)).all()]

    async def users(self) -> builtins.list[tuple[str, int]]:
        """Each user that memories name (chat users' facts), with how many."""
        count = func.count().label("n")
        query = (
            select(memories.c.user, count)
            .where(memories.c.user.is_not(None))
            .group_by(memories.c.user)
            .order_by(memories.c.user)
        )
        async with self._db.read() as conn:
            return [(str(r.user), int(r.n)) for r in (await conn.execute(query)).all()]

    async def forget(self, memory_id: int) -> Memory:
        """Delete a memory (its full-text entry goes with it); returns what was forgotten."""
        async with self._db.write() as conn:
            memory = await _one(conn, memory_id)
            await conn.execute(delete(memories).where(memories.c.id == memory_id))
        return memory

    async def keyword(
        self, query: str, *, repo: str | None = None, user: str | None = None, limit: int = 10
    ) -> builtins.list[tuple[Memory, float]]:
        """The scope's memories that share words with ``query``, best first, with a score
        (higher is better; comparable within one call only). Any word may match."""
        _scope(repo, user)
        words = [w for w in _WORD.findall(query.lower()) if w not in _STOP][:64]
        if not words:
            return []
        where = _where(repo, user)
        if self._db.is_sqlite:
            match = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
            statement = text(
                "SELECT m.id AS id, -bm25(memories_fts) AS score FROM memories_fts "
                "JOIN memories m ON m.id = memories_fts.rowid "
                f"WHERE memories_fts MATCH :match AND {where} "
                "ORDER BY bm25(memories_fts) LIMIT :limit"
            )
            params: dict[str, Any] = {"match": match}
        else:
            statement = text(
                f"SELECT m.id AS id, ts_rank_cd({PG_DOCUMENT}, q) AS score "
                "FROM memories m, to_tsquery('english', :match) q "
                f"WHERE {PG_DOCUMENT} @@ q AND {where} "
                "ORDER BY score DESC, m.id DESC LIMIT :limit"
            )
            params = {"match": " | ".join(w.replace("'", "") for w in words)}
        params.update(limit=limit, repo=repo, user=user)
        async with self._db.read() as conn:
            scored = [(int(r.id), float(r.score)) for r in (await conn.execute(statement, params))]
            found = await _many(conn, [i for i, _ in scored])
        return [(found[i], score) for i, score in scored if i in found]

    async def vectors(
        self, embedder: str, *, repo: str | None = None, user: str | None = None
    ) -> builtins.list[tuple[int, bytes]]:
        """The embeddings ``embedder`` made of the scope's memories, as (id, vector)."""
        _scope(repo, user)
        query = text(
            "SELECT m.id AS id, m.embedding AS embedding FROM memories m "
            f"WHERE m.embedder = :embedder AND {_where(repo, user)}"
        )
        async with self._db.read() as conn:
            params = {"embedder": embedder, "repo": repo, "user": user}
            result = await conn.execute(query, params)
            return [(int(r.id), bytes(r.embedding)) for r in result.all()]

    async def unembedded(
        self, *, repo: str | None = None, user: str | None = None, limit: int = 32
    ) -> builtins.list[Memory]:
        """Up to ``limit`` of the scope's memories stored without a vector, newest first."""
        _scope(repo, user)
        query = text(
            "SELECT m.id AS id FROM memories m "
            f"WHERE m.embedding IS NULL AND {_where(repo, user)} ORDER BY m.id DESC LIMIT :limit"
        )
        async with self._db.read() as conn:
            params = {"repo": repo, "user": user, "limit": limit}
            ids = [int(r.id) for r in (await conn.execute(query, params)).all()]
            found = await _many(conn, ids)
        return [found[i] for i in ids if i in found]

    async def embed(self, memory_id: int, embedding: bytes, embedder: str) -> None:
        """Give a memory stored without a vector the one ``embedder`` made of it (a memory
        that has one meanwhile keeps it)."""
        async with self._db.write() as conn:
            await conn.execute(
                update(memories)
                .where(memories.c.id == memory_id, memories.c.embedding.is_(None))
                .values(embedding=embedding, embedder=embedder)
            )

    async def many(self, ids: Sequence[int]) -> dict[int, Memory]:
        async with self._db.read() as conn:
            return await _many(conn, ids)


def _scope(repo: str | None, user: str | None) -> None:
    if repo is None and user is None:
        raise BadInput("a memory belongs to a repository or a user: name one")


def _where(repo: str | None, user: str | None) -> str:
    """The scope as SQL on ``m`` (bound as :repo and :user): exactly the named repo or user."""
    parts = []
    parts.append("m.repo = :repo" if repo is not None else "m.repo IS NULL")
    if user is not None:
        parts.append('m."user" = :user')
    elif repo is not None:
        parts.append('m."user" IS NULL')
    return "(" + " AND ".join(parts) + ")"


async def _one(conn: AsyncConnection, memory_id: int) -> Memory:
    row = (await conn.execute(select(*_COLUMNS).where(memories.c.id == memory_id))).first()
    if row is None:
        raise MemoryNotFound(f"no memory {memory_id}")
    return _memory(row)


async def _many(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, Memory]:
    if not ids:
        return {}
    rows = (await conn.execute(select(*_COLUMNS).where(memories.c.id.in_(list(ids))))).all()
    return {int(r.id): _memory(r) for r in rows}


def _memory(row: Row[Any]) -> Memory:
    return Memory(
        id=int(row.id),
        repo=row.repo,
        user=row.user,
        kind=MemoryKind(row.kind),
        text=row.text,
        prompt=row.prompt,
        outcome=row.outcome,
        files=tuple(loads(row.files) or ()),
        session_id=row.session_id,
        embedder=row.embedder,
        created_at=float(row.created_at),
    )
