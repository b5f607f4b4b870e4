"""Per-attempt keys: a ``Ticket`` says who is asking through one key, and what they may spend.

Each attempt that runs an agent gets a ticket with a random key (``tc-`` and 43 URL-safe
characters): the only key its agent ever holds. The key is worth nothing elsewhere — it is valid
only at the gateway that issued it, only until the attempt ends and the ticket is revoked.

A ticket carries what the gateway needs per request: the session, attempt, repository, engine
and user to meter for; the model pin and tier to route by; the budget and what was spent (the
session's cost so far, the attempt's requests added as they end); the callbacks that tell the
session (``on_budget`` when the budget is reached, ``on_event`` for usage and routing events);
and what routing learned (``rate_limited``, ``models_answered``).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telecoder.domain import Session
from telecoder.gateway.apis import KEY_PREFIX


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(eq=False, kw_only=True)
class Ticket:
    session_id: str
    attempt: int
    repo: str | None = None
    engine: str | None = None
    user: str | None = None
    model: str | None = None  # a pinned model (``--model``): routing keeps to it
    tier: str | None = None  # trivial, standard or complex
    budget_usd: float | None = None  # read per request; raise it with ``set_budget``
    spent_usd: float = 0.0  # the session's cost so far, this attempt's requests included
    on_budget: Callable[[float, float], None] | None = None  # (spent, budget), once per reach
    on_event: Callable[[str, dict[str, Any]], None] | None = None  # (event kind, data)
    rate_limited: bool = False  # the gateway gave up on a rate limit
    rate_limited_until: float | None = None  # ... whose backoff ends then (wall-clock)
    models_answered: set[str] = field(default_factory=set)
    asked: list[int] = field(default_factory=list)  # the agent's inbox questions (message ids)
    # The session's running totals, as the usage events show them.
    requests: int = 0
    input_tokens: int = 0  # all input, cache reads and writes included
    output_tokens: int = 0
    cached_tokens: int = 0  # input read from a cache
    key: str = field(default_factory=new_key, repr=False)
    revoked: bool = False
    budget_told: bool = False  # on_budget was called for the current budget
    pending: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @classmethod
    def of_session(
        cls,
        session: Session,
        attempt: int,
        *,
        on_budget: Callable[[float, float], None] | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> Ticket:
        """A ticket for an attempt of ``session``, its totals so far carried on."""
        origin = session.origin or {}
        user = origin.get("user") or origin.get("principal")
        return cls(
            session_id=session.id,
            attempt=attempt,
            repo=session.repo,
            engine=session.engine,
            user=str(user) if user else None,
            model=session.model,
            tier=session.tier,
            budget_usd=session.budget_usd,
            spent_usd=session.cost_usd,
            input_tokens=session.input_tokens,
            output_tokens=session.output_tokens,
            on_budget=on_budget,
            on_event=on_event,
        )

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    def set_budget(self, budget_usd: float | None) -> None:
        """A new budget (raised to resume, or removed): held requests look again."""
        self.budget_usd = budget_usd
        self.budget_told = False
        self._wake()

    async def changed(self) -> None:
        """Wait until the budget changes or the ticket is revoked."""
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def charge(
        self,
        *,
        cost_usd: float | None,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        model: str | None,
        ok: bool,
    ) -> None:
        """Add one request's usage to the running totals."""
        self.requests += 1
        self.spent_usd += cost_usd or 0.0
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_tokens += cached_tokens
        if ok and model:
            self.models_answered.add(model)

    def totals(self) -> dict[str, Any]:
        """The ``usage`` event: the session's running totals as the gateway metered them."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": round(self.spent_usd, 10),
            "requests": self.requests,
            "source": "gateway",
        }

    def tell(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)


class Tickets:
    """The live tickets of one gateway, by key."""

    def __init__(self) -> None:
        self._by_key: dict[str, Ticket] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, ticket: Ticket) -> Ticket:
        self._by_key[ticket.key] = ticket
        return ticket

    def get(self, key: str | None) -> Ticket | None:
        """The live ticket of ``key``; None for an unknown or revoked one."""
        if not key or not key.startswith(KEY_PREFIX):
            return None
        ticket = self._by_key.get(key)
        # The dict finds by hash; the compare that decides is constant-time.
        if ticket is None or not hmac.compare_digest(ticket.key, key):
            return None
        return ticket

    def remove(self, ticket: Ticket) -> None:
        self._by_key.pop(ticket.key, None)
        ticket.revoked = True
        ticket._wake()
