"""The forwarding loop's policy: shared backoff, retries, and fallback along a request's targets.

For each target in turn (usable ones first: healthy, not backing off past the retry budget):

- wait for the endpoint's turn (its shared backoff; ``backoff.py``);
- a 429/503/529 sets the endpoint's backoff (``Retry-After``) for every session, shared with the
  other gateways through the table, and the request waits its turn again — as long as the
  backoff ends within the request's budget (``TELECODER_GATEWAY_RETRY_SECONDS`` from its
  arrival); past it, the next target;
- no answer, or another 5xx: tried once more, then the next target; traffic failing in a row
  marks the endpoint unhealthy (``endpoints.Registry``);
- anything else is the answer, streamed to the agent.

Moving to another target than the first tells the session (``fallback: anthropic is down, using
anthropic-2 (claude-sonnet-4-5)``) once per change. When every target failed, the agent gets the
last answer (a 429 passes through as is); a rate limit it got sets ``ticket.rate_limited``, so
the pipeline requeues the session (``rate_limited``) rather than failing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import httpx

from telecoder.gateway.apis import Call, Kind, error_body
from telecoder.gateway.backoff import RATE_LIMITED, Expired
from telecoder.gateway.endpoints import Registry
from telecoder.gateway.routing import Hop, fallback_message, rewrite
from telecoder.gateway.tickets import Ticket
from telecoder.gateway.upstreams import Target

log = logging.getLogger(__name__)

TRIES_PER_TARGET = 2  # a target that fails (no answer, 5xx) is tried this often
RETRY_PAUSE_SECONDS = 0.25  # before trying a failed target again

Send = Callable[[Target, Any], Awaitable[httpx.Response]]


class Forwarding:
    """One per gateway: sends a request to its targets with backoff, retries and fallback."""

    def __init__(self, registry: Registry, *, retry_seconds: float) -> None:
        self.registry = registry
        self.retry_seconds = retry_seconds
        self._told: weakref.WeakKeyDictionary[Ticket, tuple[str, str]] = weakref.WeakKeyDictionary()

    def order(self, targets: Sequence[Target]) -> list[Target]:
        """Usable targets first, in their order; the others after, for when nothing else
        answers."""
        good = [t for t in targets if self.registry.usable(t.endpoint)]
        return good + [t for t in targets if t not in good]

    async def send(
        self, targets: Sequence[Target], outgoing: Any, ticket: Ticket, send: Send
    ) -> tuple[httpx.Response | None, Target | None, str]:
        """The answer to give the agent, from the target that gave it; or None (nothing
        answered), the last target tried and why."""
        deadline = time.time() + self.retry_seconds
        ordered = self.order(targets)
        last: httpx.Response | None = None
        tried: Target | None = None
        error = "no endpoint is configured"
        for index, target in enumerate(ordered):
            if target is not targets[0]:
                failed = ordered[index - 1] if index else targets[0]
                self._tell_fallback(ticket, failed, error if index else self._why(failed), target)
            tried = target
            request = with_model(outgoing, target)
            response, error, final = await self._try(target, request, ticket, deadline, last, send)
            last = response
            if final:
                return response, target, ""
        limited = error == "is rate limited"
        if limited or (last is not None and last.status_code in RATE_LIMITED):
            ticket.rate_limited = True
            until = max((self.registry.backoffs.of(t.endpoint).until for t in ordered), default=0)
            ticket.rate_limited_until = max(ticket.rate_limited_until or 0.0, until)
            if last is None and tried is not None:  # nothing sent: the endpoint is closed
                last = _rate_limit_answer(outgoing.call.kind, tried.endpoint, until)
        return last, tried, error

    async def _try(
        self,
        target: Target,
        request: Any,
        ticket: Ticket,
        deadline: float,
        last: httpx.Response | None,
        send: Send,
    ) -> tuple[httpx.Response | None, str, bool]:
        """Send to one target until it answers, gives up, or the budget ends: (the response
        to keep, why it failed, whether it is the answer)."""
        name = target.endpoint
        backoff = self.registry.backoffs.of(name)
        failures = 0
        told_wait = False
        while True:
            if backoff.closed and not told_wait:
                told_wait = True
                wait = max(0.0, backoff.until - time.time())
                ticket.tell(
                    "progress",
                    {"step": "rate_limited", "message": f"{name} is rate limited: "
                     f"waiting {wait:.1f}s", "endpoint": name},
                )  # fmt: skip
            try:
                turn = await backoff.wait(deadline)
            except Expired:
                return last, "is rate limited", False
            if last is not None:
                await last.aclose()
                last = None
            try:
                response = await send(target, request)
            except httpx.HTTPError as e:
                await turn.failed()
                reason = f"{type(e).__name__}: {e}".rstrip(": ")
                self.registry.failed(name, reason)
                failures += 1
                if failures >= TRIES_PER_TARGET:
                    return None, "is down", False
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            status = response.status_code
            until = await turn.answered(status, response.headers)
            if until is not None:  # a rate limit: shared, then waited out (or given up on)
                self.registry.backing_off(name, until)
                last = response
                if until > deadline:
                    return last, "is rate limited", False
                continue
            if status >= 500:
                self.registry.failed(name, f"HTTP {status}")
                failures += 1
                last = response
                if failures >= TRIES_PER_TARGET:
                    return last, f"is failing (HTTP {status})", False
                await last.aclose()
                last = None
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            self.registry.succeeded(name)
            return response, "", True

    def _why(self, skipped: Target) -> str:
        """Why an endpoint was passed over before trying it."""
        if self.registry.backoffs.of(skipped.endpoint).closed:
            return "is rate limited"
        return "is down"

    def _tell_fallback(self, ticket: Ticket, failed: Target, reason: str, to: Target) -> None:
        """Tell the session, once per change of where its requests go."""
        pair = (failed.endpoint, f"{to.endpoint}:{to.model}")
        if self._told.get(ticket) == pair:
            return
        self._told[ticket] = pair
        message = fallback_message(failed.endpoint, reason, Hop(to.endpoint, to.model))
        log.info("gateway: session %s: %s", ticket.session_id, message)
        ticket.tell(
            "progress",
            {
                "step": "fallback",
                "message": message,
                "from": failed.endpoint,
                "to": to.endpoint,
                "model": to.model,
            },
        )


def with_model(outgoing: Any, target: Target) -> Any:
    """The request asking for ``target.model`` (when it names one): the JSON body's ``model``,
    or for Gemini the path."""
    if target.model is None or outgoing.call.api is None:
        return outgoing
    call: Call = outgoing.call
    api = call.api
    assert api is not None
    if call.kind == Kind.GEMINI:
        rest, _ = rewrite(api, call.rest, {}, target.model)
        return replace(outgoing, call=replace(call, rest=rest))
    try:
        body = json.loads(outgoing.body) if outgoing.body else {}
    except ValueError:
        return outgoing
    if not isinstance(body, dict):
        return outgoing
    _, body = rewrite(api, call.rest, body, target.model)
    return replace(outgoing, body=json.dumps(body).encode())


def _rate_limit_answer(kind: Kind, endpoint: str, until: float) -> httpx.Response:
    """The 429 an agent gets for a request the gateway did not send: its endpoint stays
    closed past the request's retry budget."""
    wait = max(1, math.ceil(until - time.time()))
    message = f"{endpoint} is rate limited: try again in {wait} s"
    headers = {"content-type": "application/json", "retry-after": str(wait)}
    stream = httpx.ByteStream(error_body(kind, 429, message))
    return httpx.Response(429, headers=headers, stream=stream)
