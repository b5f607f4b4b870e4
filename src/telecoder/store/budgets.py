"""Budgets in the store: a session's own (raised by ``telecoder budget``) and the periods'.

Period budgets are rows of ``budgets`` (``scope`` ``global`` or ``user:<name>``, ``period``
``daily`` or ``monthly``); the settings ``TELECODER_BUDGET_DAILY_USD`` and
``TELECODER_BUDGET_MONTHLY_USD`` are global defaults a row overrides (their alert state is kept
in a hidden row, scope ``settings:global``). What a period spent is the sum of
``usage.cost_usd`` since it began (UTC). Each alert level (80, 90, 100 %) is sent once per
period: the level and the period it was sent in are updated on the condition that nobody sent
it first, so two workers never send the same alert.

At 100 %, sessions that never started wait: a claim skips them (:func:`claimable`) and each
one's ``error`` says why until it starts.
"""

from __future__ import annotations

import builtins
import enum
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, not_, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.amounts import BudgetChange
from telecoder.domain import EventKind, FailureKind, NewEvent, Session, SessionStatus
from telecoder.errors import BadInput, Conflict
from telecoder.store.db import Database
from telecoder.store.events import append_events
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.schema import budgets, sessions, usage
from telecoder.store.sessions import _get

ALERT_LEVELS = (80, 90, 100)  # per cent of a period's limit: one alert each, per period
GLOBAL = "global"
USER_PREFIX = "user:"
SETTINGS_SCOPE = "settings:global"  # alert state of the settings' global defaults
WAITING = "waiting: "  # how the error of a session held by a period budget begins


@dataclass(frozen=True, slots=True, kw_only=True)
class PeriodBudget:
    """A period's limit and where it stands now."""

    scope: str  # global or user:<name>
    period: str  # daily or monthly
    limit_usd: float
    source: str  # "set" (telecoder budgets set) or "settings" (a default)
    spent_usd: float = 0.0
    period_key: str = ""  # 2026-11-28 or 2026-11
    alerted_level: int = 0  # the highest alert sent this period

    @property
    def user(self) -> str | None:
        return self.scope.removeprefix(USER_PREFIX) if self.scope != GLOBAL else None

    @property
    def reached(self) -> bool:
        return self.spent_usd >= self.limit_usd

    @property
    def percent(self) -> float:
        return 100.0 if self.limit_usd <= 0 else round(100 * self.spent_usd / self.limit_usd, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "user": self.user,
            "period": self.period,
            "limit_usd": self.limit_usd,
            "spent_usd": round(self.spent_usd, 6),
            "percent": self.percent,
            "reached": self.reached,
            "period_key": self.period_key,
            "alerted_level": self.alerted_level,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    scope: str
    period: str
    level: int  # 80, 90 or 100
    spent_usd: float
    limit_usd: float
    period_key: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "period": self.period,
            "level": self.level,
            "spent_usd": round(self.spent_usd, 6),
            "limit_usd": self.limit_usd,
            "period_key": self.period_key,
            "message": self.message,
        }

    @property
    def message(self) -> str:
        who = "" if self.scope == GLOBAL else f"{self.scope.removeprefix('user:')}'s "
        return (
            f"{who}{self.period} budget at {self.level} %: ${self.spent_usd:.2f} of "
            f"${self.limit_usd:.2f} ({self.period_key})"
        )


@dataclass(frozen=True, slots=True)
class Held:
    """Sessions a claim must not start yet: every new one (a global limit is spent), or the
    new ones of these users. Values are the reasons their status shows."""

    everyone: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.everyone is not None or bool(self.users)

    def reason_for(self, user: str | None) -> str | None:
        """Why a new session of ``user`` waits; None when it may start."""
        return self.everyone or (self.users.get(user) if user else None)


def _of_user(user: str) -> Any:
    """Sessions whose origin names ``user`` (the JSON is written compactly by ``dumps``)."""
    return or_(
        sessions.c.origin.contains(f'"principal":{_json(user)}', autoescape=True),
        sessions.c.origin.contains(f'"user":{_json(user)}', autoescape=True),
    )


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def claimable(held: Held) -> Any:
    """The condition on ``sessions`` a claim adds: started sessions go on; new ones wait while
    their period budget is spent."""
    if held.everyone is not None:
        return sessions.c.attempt > 0
    if not held.users:
        return true()
    return or_(sessions.c.attempt > 0, not_(or_(*[_of_user(u) for u in held.users])))


class Budgets:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- a session's own budget ---

    async def raise_session(self, session_id: str, change: BudgetChange) -> Session:
        """Set or add to the session's budget; a session blocked on its budget is queued again
        (its next attempt resumes the agent where it stopped).

        ``Conflict`` for an ended session; ``BadInput`` when a blocked session's new budget is
        not above what it has spent (it would stop again at once).
        """
        now = time.time()
        async with self._db.write() as conn:
            session = await _get(conn, session_id, lock=True)
            if session.status.terminal:
                raise Conflict(f"session {session_id} is {session.status.value}: it has ended")
            new = round(change.apply(session.budget_usd), 6)
            waiting = (
                session.status == SessionStatus.BLOCKED
                and session.failure_kind == FailureKind.BUDGET_REACHED
            )
            if waiting and new <= session.cost_usd:
                raise BadInput(
                    f"a budget of ${new:.2f} is not above what session {session_id} has spent "
                    f"(${session.cost_usd:.2f}): it would stop again at once"
                )
            values: dict[str, Any] = {"budget_usd": new, "updated_at": now}
            raised = {"step": "budget_raised", "budget_usd": new, "was": session.budget_usd}
            new_events = [NewEvent(kind=EventKind.PROGRESS, data=raised)]
            if waiting:
                values.update(
                    status=SessionStatus.QUEUED.value, available_at=now, error=None, question=None
                )
                reason = f"the budget was raised to ${new:.2f}"
                status = {"status": SessionStatus.QUEUED.value, "reason": reason}
                new_events.append(NewEvent(kind=EventKind.STATUS, data=status))
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(values))
            await append_events(conn, session_id, None, new_events, now=now)
            if waiting:
                await self._db.notify(conn, Notice(NoticeKind.QUEUED, session_id))
        async with self._db.read() as conn:
            return await _get(conn, session_id)

    async def of_session(self, session_id: str) -> float | None:
        """The session's budget as the store has it now (raised, perhaps, since it started)."""
        async with self._db.read() as conn:
            query = select(sessions.c.budget_usd).where(sessions.c.id == session_id)
            value = (await conn.execute(query)).scalar()
        return None if value is None else float(value)

    # --- period budgets ---

    async def set(self, scope: str, period: str, limit_usd: float) -> None:
        """Set the limit of ``scope`` for ``period``; sessions it held may start again."""
        _check(scope, period)
        now = time.time()
        async with self._db.write() as conn:
            done = await conn.execute(
                update(budgets)
                .where(budgets.c.scope == scope, budgets.c.period == period)
                .values(limit_usd=limit_usd)
            )
            if not done.rowcount:
                await conn.execute(
                    insert(budgets).values(
                        scope=scope, period=period, limit_usd=limit_usd, created_at=now
                    )
                )
            await self._release(conn, now)

    async def remove(self, scope: str, period: str) -> bool:
        """Remove a limit; False when there was none."""
        _check(scope, period)
        now = time.time()
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(budgets).where(budgets.c.scope == scope, budgets.c.period == period)
            )
            await self._release(conn, now)
        return bool(done.rowcount)

    async def _release(self, conn: AsyncConnection, now: float) -> None:
        """Clear the "waiting" of held sessions: the next claim decides again."""
        await conn.execute(
            update(sessions)
            .where(*_new_queued(), sessions.c.error.startswith(WAITING))
            .values(error=None, updated_at=now)
        )
        await self._db.notify(conn, Notice(NoticeKind.QUEUED, ""))

    async def status(
        self, defaults: Mapping[str, float | None], now: float | None = None
    ) -> builtins.list[PeriodBudget]:
        """Every limit in force (set ones, then the settings' defaults) and what it spent."""
        now = time.time() if now is None else now
        async with self._db.read() as conn:
            rows = (await conn.execute(select(budgets).order_by(budgets.c.scope))).all()
            found = []
            for limit, source, alerted in _limits(rows, defaults, now):
                scope, period, limit_usd = limit
                spent = await _spent(conn, scope, period, now)
                found.append(
                    PeriodBudget(
                        scope=scope,
                        period=period,
                        limit_usd=limit_usd,
                        source=source,
                        spent_usd=spent,
                        period_key=period_key(period, now),
                        alerted_level=alerted,
                    )
                )
        return found

    async def held(self, defaults: Mapping[str, float | None], now: float | None = None) -> Held:
        """Who may not start a new session now: nobody, everyone, or some users."""
        everyone: str | None = None
        users: dict[str, str] = {}
        for b in await self.status(defaults, now):
            if not b.reached:
                continue
            reason = waiting(b.period, b.spent_usd, b.limit_usd, b.user)
            if b.user is None:
                everyone = everyone or reason
            else:
                users.setdefault(b.user, reason)
        return Held(everyone, users)

    async def hold(self, held: Held) -> builtins.list[str]:
        """Say why on each new session ``held`` keeps waiting (once: a status event and its
        ``error``); the ids newly told."""
        if not held.active:
            return []
        now = time.time()
        told: builtins.list[str] = []
        if held.everyone is not None:  # everyone's reason is the one that matters
            groups = [(true(), held.everyone)]
        else:
            groups = [(_of_user(user), reason) for user, reason in held.users.items()]
        async with self._db.write() as conn:
            for which, reason in groups:
                assert reason is not None
                ids = (
                    (
                        await conn.execute(
                            update(sessions)
                            .where(
                                *_new_queued(),
                                which,
                                or_(sessions.c.error.is_(None), sessions.c.error != reason),
                            )
                            .values(error=reason, updated_at=now)
                            .returning(sessions.c.id)
                        )
                    )
                    .scalars()
                    .all()
                )
                for session_id in ids:
                    data = {"status": SessionStatus.QUEUED.value, "reason": reason}
                    status = NewEvent(kind=EventKind.STATUS, data=data)
                    await append_events(conn, session_id, None, [status], now=now)
                told.extend(ids)
        return told

    async def alerts(
        self, defaults: Mapping[str, float | None], user: str | None, now: float | None = None
    ) -> builtins.list[Alert]:
        """The alerts the global budgets (and ``user``'s) are due now, each claimed so that no
        other caller sends it again this period."""
        now = time.time() if now is None else now
        scopes = {GLOBAL} | ({scope_of(user)} if user else set())
        due: builtins.list[Alert] = []
        async with self._db.write() as conn:
            rows = (await conn.execute(select(budgets))).all()
            for (scope, period, limit_usd), source, _ in _limits(rows, defaults, now):
                if scope not in scopes:
                    continue
                key = period_key(period, now)
                spent = await _spent(conn, scope, period, now)
                reached = level(spent, limit_usd)
                if not reached:
                    continue
                row_scope = SETTINGS_SCOPE if source == "settings" else scope
                if source == "settings":
                    await self._seed(conn, row_scope, period, limit_usd, now)
                state = (
                    await conn.execute(
                        select(budgets.c.alerted_level, budgets.c.alerted_period).where(
                            budgets.c.scope == row_scope, budgets.c.period == period
                        )
                    )
                ).one()
                sent = state.alerted_level if state.alerted_period == key else 0
                if reached <= sent:
                    continue
                claimed = await conn.execute(
                    update(budgets)
                    .where(
                        budgets.c.scope == row_scope,
                        budgets.c.period == period,
                        budgets.c.alerted_level == state.alerted_level,
                        budgets.c.alerted_period.is_(None)
                        if state.alerted_period is None
                        else budgets.c.alerted_period == state.alerted_period,
                    )
                    .values(alerted_level=reached, alerted_period=key)
                )
                if not claimed.rowcount:
                    continue  # another worker sent it
                for lv in ALERT_LEVELS:
                    if sent < lv <= reached:
                        alert = Alert(
                            scope=scope,
                            period=period,
                            level=lv,
                            spent_usd=spent,
                            limit_usd=limit_usd,
                            period_key=key,
                        )
                        due.append(alert)
        return due

    async def _seed(
        self, conn: AsyncConnection, scope: str, period: str, limit: float, now: float
    ) -> None:
        values = {"scope": scope, "period": period, "limit_usd": limit, "created_at": now}
        dialect: Any = sqlite if self._db.is_sqlite else postgresql
        await conn.execute(dialect.insert(budgets).values(values).on_conflict_do_nothing())


def _check(scope: str, period: str) -> None:
    if period not in tuple(Period):
        raise BadInput(f"unknown period {period!r} (known: daily, monthly)")
    user = scope.removeprefix(USER_PREFIX)
    if scope != GLOBAL and (not scope.startswith(USER_PREFIX) or not user.strip()):
        raise BadInput(f"unknown budget scope {scope!r} (known: global, user:NAME)")


def _new_queued() -> builtins.list[Any]:
    return [sessions.c.status == SessionStatus.QUEUED.value, sessions.c.attempt == 0]


def _limits(
    rows: Any, defaults: Mapping[str, float | None], now: float
) -> builtins.list[tuple[tuple[str, str, float], str, int]]:
    """``((scope, period, limit), source, alerted level this period)`` of every limit."""
    found = []
    have = set()
    hidden = {}
    for row in rows:
        sent = row.alerted_level if row.alerted_period == period_key(row.period, now) else 0
        if row.scope == SETTINGS_SCOPE:
            hidden[row.period] = sent
            continue
        have.add((row.scope, row.period))
        found.append(((row.scope, row.period, float(row.limit_usd)), "set", sent))
    for period in Period:
        limit = defaults.get(period.value)
        if limit is not None and (GLOBAL, period.value) not in have:
            limit_key = (GLOBAL, period.value, float(limit))
            found.append((limit_key, "settings", hidden.get(period.value, 0)))
    return found


async def _spent(conn: AsyncConnection, scope: str, period: str, now: float) -> float:
    query = select(func.coalesce(func.sum(usage.c.cost_usd), 0.0)).where(
        usage.c.ts >= period_start(period, now)
    )
    if scope != GLOBAL:
        query = query.where(usage.c.user == scope.removeprefix(USER_PREFIX))
    return float((await conn.execute(query)).scalar_one())


def defaults_of(daily: float | None, monthly: float | None) -> dict[str, float | None]:
    return {Period.DAILY.value: daily, Period.MONTHLY.value: monthly}


# --- periods: pure functions of a moment, in UTC ---


class Period(enum.StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


def scope_of(user: str | None) -> str:
    return f"{USER_PREFIX}{user}" if user else GLOBAL


def period_key(period: str, ts: float) -> str:
    """The period ``ts`` falls in: ``2026-11-28`` (daily) or ``2026-11`` (monthly)."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%d" if period == Period.DAILY else "%Y-%m")


def period_start(period: str, ts: float) -> float:
    """When the period ``ts`` falls in began (UTC midnight, or the first of the month)."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Period.MONTHLY:
        start = start.replace(day=1)
    return start.timestamp()


def level(spent: float, limit: float) -> int:
    """The highest alert level ``spent`` has reached of ``limit`` (0: none)."""
    if limit <= 0:
        return ALERT_LEVELS[-1]
    reached = [lv for lv in ALERT_LEVELS if spent >= limit * lv / 100 - 1e-9]
    return reached[-1] if reached else 0


def waiting(period: str, spent: float, limit: float, user: str | None = None) -> str:
    """Why a new session waits: ``waiting: daily budget reached ($20.00 of $20.00)``."""
    whose = f"{user}'s " if user else ""
    return f"{WAITING}{whose}{period} budget reached (${spent:.2f} of ${limit:.2f})"
