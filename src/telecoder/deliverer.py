"""Sends the outbox: signed HTTP POSTs to subscriptions, calls to in-process subscribers.

A deliverer claims due rows with a lease (so two servers never send one row at once), sends
each, and records the answer: delivered on a 2xx, otherwise due again after a backoff that
doubles up to a cap, and failed for good after ``max_tries``. Rows live in the database, so a
subscriber that is down, or a server that restarts, delays notifications but loses none.

Each POST carries Standard Webhooks headers (``webhook-id`` is the row's id, the same on every
retry, so a subscriber can drop duplicates; ``webhook-signature`` is ``v1,<base64 HMAC>`` of
``id.timestamp.body`` with the subscription's secret).

In-process subscribers (entry-point group ``telecoder.subscribers``) are callables given the
event as a dict; one that fails is logged and never affects the session or other subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from telecoder import __version__, registry, signing
from telecoder.errors import StoreUnavailable
from telecoder.settings import Settings
from telecoder.store import Delivery, Store

log = logging.getLogger(__name__)

Subscriber = Callable[[dict[str, Any]], Any]

KEEP_SECONDS = 14 * 86400  # delivered and failed notifications are kept this long
PRUNE_EVERY = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    max_tries: int = 10
    backoff: float = 5.0
    backoff_max: float = 900.0
    timeout: float = 10.0
    poll_seconds: float = 1.0


class Deliverer:
    def __init__(
        self,
        store: Store,
        *,
        policy: Policy,
        subscribers: Mapping[str, Subscriber] | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.subscribers = dict(subscribers or {})
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Look for due rows now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send due rows until ``stop`` is set; a failing database is logged and retried."""
        async with httpx.AsyncClient(
            timeout=self.policy.timeout,
            follow_redirects=False,
            headers={"user-agent": f"TeleCoder/{__version__}"},
        ) as client:
            pruned_at = time.monotonic() - PRUNE_EVERY + 60  # first a minute after start
            while not stop.is_set():
                try:
                    if time.monotonic() - pruned_at > PRUNE_EVERY:
                        pruned_at = time.monotonic()
                        await self.store.outbox.prune(KEEP_SECONDS)
                    sent = await self.send_due(client)
                except StoreUnavailable as e:
                    log.warning("the deliverer cannot reach the database: %s", e.message)
                    sent = 0
                except Exception:
                    log.exception("the deliverer failed; trying again")
                    sent = 0
                if sent:
                    continue
                self._wake.clear()
                waits = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                ]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED),
                        self.policy.poll_seconds,
                    )
                for w in waits:
                    w.cancel()

    async def send_due(self, client: httpx.AsyncClient) -> int:
        """Claim the due rows and send them; returns how many were claimed."""
        lease = self.policy.timeout * 3 + 10
        claimed = await self.store.outbox.claim(self.holder, lease_seconds=lease)
        await asyncio.gather(*(self._send(client, d) for d in claimed))
        return len(claimed)

    async def _send(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        if delivery.subscription_id is None:
            await self._call_subscribers(delivery)
            await self.store.outbox.delivered(self.holder, delivery.id, None)
            return
        if delivery.url is None or delivery.secret is None:
            await self._failed(delivery, "the subscription was removed", None, last=True)
            return
        body = delivery.payload.encode()
        headers = {
            **signing.headers(delivery.secret, delivery.id, body),
            "content-type": "application/json",
        }
        try:
            response = await client.post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            await self._failed(delivery, f"{type(e).__name__}: {e}".rstrip(": "), None)
            return
        if response.is_success:
            await self.store.outbox.delivered(self.holder, delivery.id, response.status_code)
        else:
            text = response.text[:200].strip()
            await self._failed(
                delivery, f"HTTP {response.status_code}: {text}", response.status_code
            )

    async def _failed(
        self, delivery: Delivery, error: str, status: int | None, *, last: bool = False
    ) -> None:
        state = await self.store.outbox.retry(
            self.holder,
            delivery,
            error=error,
            status=status,
            max_tries=1 if last else self.policy.max_tries,
            backoff=self.policy.backoff,
            backoff_max=self.policy.backoff_max,
        )
        log.warning(
            "notification %s to %s failed (try %d, now %s): %s",
            delivery.id,
            delivery.url,
            delivery.tries + 1,
            state.value,
            error,
        )

    async def _call_subscribers(self, delivery: Delivery) -> None:
        for name, subscriber in self.subscribers.items():
            try:
                result = subscriber(json.loads(delivery.payload))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("the subscriber %r failed on %s", name, delivery.id)


def policy_of(settings: Settings) -> Policy:
    return Policy(
        max_tries=settings.notify_max_tries,
        backoff=settings.notify_backoff_seconds,
        backoff_max=settings.notify_backoff_max_seconds,
        timeout=settings.notify_timeout_seconds,
        poll_seconds=settings.notify_poll_seconds,
    )


def load_subscribers() -> dict[str, Subscriber]:
    """The in-process subscribers of the entry-point group ``telecoder.subscribers``; one that
    cannot be loaded is logged and left out."""
    found: dict[str, Subscriber] = {}
    for name in registry.names("subscribers"):
        try:
            found[name] = registry.create("subscribers", name)
        except Exception:
            log.exception("cannot load the subscriber %r", name)
    return found
