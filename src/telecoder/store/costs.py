"""What model traffic cost, read from the ``usage`` table: totals, groups, days, top sessions.

Everything is summed in SQL, on SQLite and PostgreSQL alike, over a range the ``ts`` index
finds (:class:`_Span`). A request whose model has no known price has no cost: it is counted in
``unpriced_requests`` (and its model named in ``unpriced_models``), never given a guessed one,
so a total with unpriced requests is a lower bound and says so.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    cast,
    false,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import SessionStatus, iso
from telecoder.store.db import Database
from telecoder.store.schema import sessions, usage
from telecoder.timerange import DAY, day_name, day_of

MAX_DAYS = 366  # the longest per-day series a report carries (its latest days)


class By(enum.StrEnum):
    """What a report groups by."""

    MODEL = "model"
    ENGINE = "engine"
    REPO = "repo"
    USER = "user"
    DAY = "day"
    ENDPOINT = "endpoint"
    SESSION = "session"


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """Sums over a set of usage rows."""

    requests: int = 0
    input_tokens: int = 0  # fresh input: cache reads and writes apart
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0  # of the priced requests only
    unpriced_requests: int = 0  # requests whose model had no known price

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_requests=self.unpriced_requests + other.unpriced_requests,
        )


@dataclass(frozen=True, slots=True)
class Group:
    key: str | None  # None: the rows had no value (no user, no session, …)
    figures: Figures

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **self.figures.to_dict()}


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCost:
    session_id: str
    figures: Figures
    prompt: str | None = None  # None: the session is gone (its usage rows stay)
    repo: str | None = None
    engine: str | None = None
    status: SessionStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "prompt": self.prompt,
            "repo": self.repo,
            "engine": self.engine,
            "status": self.status.value if self.status else None,
            **self.figures.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    by: By | None
    since: float | None
    until: float | None
    total: Figures
    groups: list[Group] = field(default_factory=list)
    more_groups: bool = False  # more groups than the limit: the costliest are shown
    days: list[Group] = field(default_factory=list)  # one per UTC day, keys 2026-11-01
    top_sessions: list[SessionCost] = field(default_factory=list)
    unpriced_models: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The shape of ``GET /api/costs`` and ``telecoder costs --json``."""
        return {
            "by": self.by.value if self.by else None,
            "since": iso(self.since),
            "until": iso(self.until),
            "total": self.total.to_dict(),
            "groups": [g.to_dict() for g in self.groups],
            "more_groups": self.more_groups,
            "days": [{"day": d.key, **d.figures.to_dict()} for d in self.days],
            "top_sessions": [s.to_dict() for s in self.top_sessions],
            "unpriced_models": self.unpriced_models,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Past:
    """A finished session of a repository, for estimates."""

    session_id: str
    engine: str
    model: str | None
    prompt: str
    status: SessionStatus
    cost_usd: float
    input_tokens: int
    output_tokens: int
    created_at: float


class Costs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def report(
        self,
        *,
        by: By | None = None,
        since: float | None = None,
        until: float | None = None,
        top: int = 10,
        limit: int = 100,
        now: float | None = None,
        user: str | None = None,
    ) -> Report:
        """Totals in ``[since, until)``, grouped ``by``, with the per-day series (missing days
        zero), the ``top`` costliest sessions (``user``'s only, when given: a member's view; the
        totals stay everyone's) and the models that had no price."""
        now = time.time() if now is None else now
        async with self._db.read() as conn:
            span = await self._span(conn, since, until)
            day = self._day()
            per_day = select(day.label("key"), *_sums()).group_by(day)
            days = {int(r[0]): _figures(r, 1) for r in await conn.execute(span.within(per_day))}
            groups: list[Group] = []
            more = False
            if by is not None and by != By.DAY:
                groups, more = await self._groups(conn, by, span, limit)
            top_sessions = await self._top(conn, span, top, user) if top > 0 else []
            unpriced = (
                select(usage.c.model)
                .distinct()
                .where(usage.c.cost_usd.is_(None), usage.c.model.is_not(None))
            )
            models = sorted(str(m) for (m,) in await conn.execute(span.within(unpriced)))
        total = sum(days.values(), Figures())  # every row is in one day
        first = min(days, default=None)
        series = _series(days, since, until, first, now)
        if by == By.DAY:
            groups = series
        return Report(
            by=by,
            since=since,
            until=until,
            total=total,
            groups=groups,
            more_groups=more,
            days=series,
            top_sessions=top_sessions,
            unpriced_models=models,
        )

    async def groups(
        self,
        by: By,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> tuple[list[Group], bool]:
        """The costliest ``limit`` groups (days: in order), and whether there were more."""
        if by == By.DAY:
            report = await self.report(by=by, since=since, until=until, top=0)
            return report.groups, False
        async with self._db.read() as conn:
            span = await self._span(conn, since, until)
            return await self._groups(conn, by, span, limit)

    async def _groups(
        self, conn: AsyncConnection, by: By, span: _Span, limit: int
    ) -> tuple[list[Group], bool]:
        column = _COLUMN[by]
        grouped = (
            select(column.label("key"), *_sums())
            .group_by(column)
            .order_by(_cost_order(), func.count().desc(), column)
            .limit(limit + 1)
        )
        found = list(await conn.execute(span.within(grouped)))
        return [Group(r[0], _figures(r, 1)) for r in found[:limit]], len(found) > limit

    async def history(self, repo: str, *, limit: int = 500) -> list[Past]:
        """The repository's latest finished sessions that show what a run costs: those that
        succeeded, and those that failed or died after using a model. Newest first."""
        spent = (sessions.c.input_tokens > 0) | (sessions.c.cost_usd > 0)
        query = (
            select(
                sessions.c.id,
                sessions.c.engine,
                sessions.c.model,
                sessions.c.prompt,
                sessions.c.status,
                sessions.c.cost_usd,
                sessions.c.input_tokens,
                sessions.c.output_tokens,
                sessions.c.created_at,
            )
            .where(
                sessions.c.repo == repo,
                (sessions.c.status == SessionStatus.SUCCEEDED.value)
                | (sessions.c.status.in_(_SPENT_FAILURES) & spent),
            )
            .order_by(sessions.c.created_at.desc(), sessions.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = await conn.execute(query)
            return [
                Past(
                    session_id=r.id,
                    engine=r.engine,
                    model=r.model,
                    prompt=r.prompt,
                    status=SessionStatus(r.status),
                    cost_usd=float(r.cost_usd),
                    input_tokens=int(r.input_tokens),
                    output_tokens=int(r.output_tokens),
                    created_at=float(r.created_at),
                )
                for r in rows
            ]

    async def _top(
        self, conn: AsyncConnection, span: _Span, top: int, user: str | None
    ) -> list[SessionCost]:
        costliest = (
            select(usage.c.session_id, *_sums())
            .where(usage.c.session_id.is_not(None))
            .group_by(usage.c.session_id)
            .order_by(_cost_order(), func.count().desc(), usage.c.session_id)
            .limit(top)
        )
        if user is not None:
            theirs = select(sessions.c.id).where(sessions.c.user == user)
            costliest = costliest.where(usage.c.session_id.in_(theirs))
        sub = span.within(costliest).subquery()
        query = (
            select(sub, sessions.c.prompt, sessions.c.repo, sessions.c.engine, sessions.c.status)
            .select_from(sub.outerjoin(sessions, sessions.c.id == sub.c.session_id))
            .order_by(sub.c.cost_usd.desc(), sub.c.requests.desc(), sub.c.session_id)
        )
        found = []
        for r in await conn.execute(query):
            m = r._mapping
            found.append(
                SessionCost(
                    session_id=m["session_id"],
                    figures=_figures(r, 1),
                    prompt=m["prompt"],
                    repo=m["repo"],
                    engine=m["engine"],
                    status=SessionStatus(m["status"]) if m["status"] else None,
                )
            )
        return found

    def _day(self) -> ColumnElement[int]:
        """The UTC day of a row, as days since the epoch (PostgreSQL's cast would round)."""
        per_day = usage.c.ts / literal_column(repr(DAY))  # one literal: GROUP BY repeats it
        if self._db.is_sqlite:
            return cast(per_day, Integer)
        return cast(func.floor(per_day), Integer)

    async def _span(self, conn: AsyncConnection, since: float | None, until: float | None) -> _Span:
        """The range, with the ids of its first and last rows on SQLite (see :class:`_Span`)."""
        if not self._db.is_sqlite or (since is None and until is None):
            return _Span(since, until)
        bounds = select(func.min(usage.c.id), func.max(usage.c.id))
        if since is not None:
            bounds = bounds.where(usage.c.ts >= since)
        if until is not None:
            bounds = bounds.where(usage.c.ts < until)
        first, last = (await conn.execute(bounds)).one()
        return _Span(since, until, ids=(first, last))


@dataclass(frozen=True, slots=True)
class _Span:
    """``since <= ts < until`` as a filter.

    On SQLite, reading a third of the table through the ``ts`` index costs a lookup per row,
    many times a plain scan. There the range also goes as the ids of its first and last rows
    (one pass over the index, which holds the ids) and ``ts`` is compared as an expression, so
    SQLite reads the rows by id, in one sweep. Rows are appended as requests end, so the ids
    of a time range are (nearly) one run; the ``ts`` test keeps the answer exact regardless.
    """

    since: float | None
    until: float | None
    ids: tuple[int | None, int | None] | None = None

    def within(self, query: Select[Any]) -> Select[Any]:
        ts: Any = usage.c.ts
        if self.ids is not None:
            first, last = self.ids
            if first is None or last is None:
                return query.where(false())  # no row in the range
            query = query.where(usage.c.id.between(first, last))
            ts = usage.c.ts + 0  # an expression: SQLite leaves the ts index alone
        if self.since is not None:
            query = query.where(ts >= self.since)
        if self.until is not None:
            query = query.where(ts < self.until)
        return query


_SPENT_FAILURES = (SessionStatus.FAILED.value, SessionStatus.DEAD.value)

_COLUMN: dict[By, Any] = {
    By.MODEL: usage.c.model,
    By.ENGINE: usage.c.engine,
    By.REPO: usage.c.repo,
    By.USER: usage.c.user,
    By.ENDPOINT: usage.c.endpoint,
    By.SESSION: usage.c.session_id,
}


def _sums() -> list[ColumnElement[Any]]:
    """The columns of :class:`Figures`, in its order."""
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(usage.c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(usage.c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(usage.c.cache_read_tokens), 0).label("cache_read_tokens"),
        func.coalesce(func.sum(usage.c.cache_write_tokens), 0).label("cache_write_tokens"),
        func.coalesce(func.sum(usage.c.cost_usd), 0.0).label("cost_usd"),
        (func.count() - func.count(usage.c.cost_usd)).label("unpriced_requests"),
    ]


def _cost_order() -> Any:
    return func.coalesce(func.sum(usage.c.cost_usd), 0.0).desc()


def _figures(row: Any, offset: int = 0) -> Figures:
    """The :func:`_sums` columns of ``row``, starting at ``offset`` (1 after a key)."""
    values = tuple(row)[offset : offset + 7]
    requests, fresh, output, read, write, cost, unpriced = values
    return Figures(
        requests=int(requests),
        input_tokens=int(fresh),
        output_tokens=int(output),
        cache_read_tokens=int(read),
        cache_write_tokens=int(write),
        cost_usd=float(cost),
        unpriced_requests=int(unpriced),
    )


def _series(
    days: dict[int, Figures],
    since: float | None,
    until: float | None,
    first: int | None,
    now: float,
) -> list[Group]:
    """Every UTC day of the range (from the ``first`` with usage when open), in order, the
    days without usage at zero."""
    start = day_of(since) if since is not None else first
    if start is None:
        return []
    last = math.ceil(until / DAY) - 1 if until is not None else day_of(now)
    first_day = max(start, last - MAX_DAYS + 1)
    return [Group(day_name(d), days.get(d, Figures())) for d in range(first_day, last + 1)]
