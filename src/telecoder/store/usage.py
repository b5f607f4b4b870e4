"""The usage table: one row per model request the gateway forwarded.

Recording a row also adds its tokens and cost to the session's totals, in the same transaction,
so a session's figures are the gateway's (live while it runs, exact across revisions, retries
and chat turns) and never depend on what an agent CLI chose to report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Lease
from telecoder.errors import LeaseLost
from telecoder.store.db import Database
from telecoder.store.events import fenced
from telecoder.store.schema import sessions, usage


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    endpoint: str
    api: str  # anthropic, openai-chat, openai-responses, gemini, ollama
    status: int
    latency_ms: float
    session_id: str | None = None
    attempt: int | None = None
    repo: str | None = None
    engine: str | None = None
    user: str | None = None
    model: str | None = None
    input_tokens: int = 0  # fresh input: cache reads and writes are counted apart
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    ttft_ms: float | None = None
    streamed: bool = False
    ts: float = field(default_factory=time.time)

    @property
    def all_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0  # all input, cache reads and writes included
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0


class Usages:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, row: UsageRow) -> None:
        """Store the row and add it to its session's totals."""
        async with self._db.write() as conn:
            await conn.execute(insert(usage).values(**row.to_dict()))
            if row.session_id is not None:
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.id == row.session_id)
                    .values(
                        cost_usd=sessions.c.cost_usd + (row.cost_usd or 0.0),
                        input_tokens=sessions.c.input_tokens + row.all_input_tokens,
                        output_tokens=sessions.c.output_tokens + row.output_tokens,
                    )
                )

    async def forwarded(self, lease: Lease, rows: Sequence[UsageRow], *, first: bool) -> int:
        """Store what a remote worker's gateway metered for the attempt ``lease`` holds, and
        add it to the session's totals; fenced on the lease (else LeaseLost). ``first``: these
        rows start the attempt's usage over (what an earlier, unanswered call sent is taken
        back first), so sending them again counts nothing twice. The rows stored for the
        attempt."""
        async with self._db.write() as conn:
            held = (
                await conn.execute(
                    select(sessions.c.id).where(*fenced(lease)).with_for_update()  # type: ignore[arg-type]
                )
            ).first()
            if held is None:
                raise LeaseLost(f"lost the lease on {lease.session_id} attempt {lease.attempt}")
            mine = (usage.c.session_id == lease.session_id, usage.c.attempt == lease.attempt)
            if first:
                old = (await conn.execute(_sums().where(*mine))).one()
                if old.n:
                    await conn.execute(delete(usage).where(*mine))
                    await _add(conn, lease.session_id, -old.cost, -old.inputs, -old.outputs)
            if rows:
                values = [
                    {**r.to_dict(), "session_id": lease.session_id, "attempt": lease.attempt}
                    for r in rows
                ]
                await conn.execute(insert(usage), values)
                await _add(
                    conn,
                    lease.session_id,
                    sum(r.cost_usd or 0.0 for r in rows),
                    sum(r.all_input_tokens for r in rows),
                    sum(r.output_tokens for r in rows),
                )
            return int((await conn.execute(select(func.count()).where(*mine))).scalar() or 0)

    async def carry(
        self, session_id: str, *, cost_usd: float, input_tokens: int, output_tokens: int
    ) -> None:
        """Set the session's totals to what its earlier attempts used elsewhere: a remote
        worker's scratch copy starts from the server's figures, so its budget counts them."""
        async with self._db.write() as conn:
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id)
                .values(cost_usd=cost_usd, input_tokens=input_tokens, output_tokens=output_tokens)
            )

    async def of_session(self, session_id: str) -> list[UsageRow]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(usage).where(usage.c.session_id == session_id).order_by(usage.c.id)
            )
            return [_row(r) for r in rows]

    async def models(self, session_id: str) -> list[dict[str, Any]]:
        """The models that answered the session's requests: endpoint, model, requests."""
        query = (
            select(usage.c.endpoint, usage.c.model, func.count())
            .where(usage.c.session_id == session_id, usage.c.status < 400)
            .group_by(usage.c.endpoint, usage.c.model)
            .order_by(func.min(usage.c.id))
        )
        async with self._db.read() as conn:
            rows = await conn.execute(query)
            return [{"endpoint": e, "model": m, "requests": int(n)} for e, m, n in rows]

    async def totals(self, session_id: str, attempt: int | None = None) -> Totals:
        """What the session (or one of its attempts) used, as the gateway metered it."""
        query = select(
            func.count(),
            func.coalesce(func.sum(usage.c.input_tokens), 0),
            func.coalesce(func.sum(usage.c.cache_read_tokens), 0),
            func.coalesce(func.sum(usage.c.cache_write_tokens), 0),
            func.coalesce(func.sum(usage.c.output_tokens), 0),
            func.coalesce(func.sum(usage.c.cost_usd), 0.0),
        ).where(usage.c.session_id == session_id)
        if attempt is not None:
            query = query.where(usage.c.attempt == attempt)
        async with self._db.read() as conn:
            count, fresh, read, write, output, cost = (await conn.execute(query)).one()
        return Totals(
            requests=int(count),
            input_tokens=int(fresh + read + write),
            output_tokens=int(output),
            cache_read_tokens=int(read),
            cost_usd=float(cost),
        )


def _sums() -> Any:
    return select(
        func.count().label("n"),
        func.coalesce(func.sum(usage.c.cost_usd), 0.0).label("cost"),
        func.coalesce(
            func.sum(usage.c.input_tokens + usage.c.cache_read_tokens + usage.c.cache_write_tokens),
            0,
        ).label("inputs"),
        func.coalesce(func.sum(usage.c.output_tokens), 0).label("outputs"),
    )


async def _add(
    conn: AsyncConnection, session_id: str, cost: float, inputs: int, outputs: int
) -> None:
    await conn.execute(
        update(sessions)
        .where(sessions.c.id == session_id)
        .values(
            cost_usd=sessions.c.cost_usd + cost,
            input_tokens=sessions.c.input_tokens + inputs,
            output_tokens=sessions.c.output_tokens + outputs,
        )
    )


def _row(row: Row[Any]) -> UsageRow:
    m = dict(row._mapping)
    m.pop("id", None)
    return UsageRow(**m)
