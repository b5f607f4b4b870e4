"""The gateway: model APIs on loopback, forwarded with the real key, streamed through as they come.

One ``Gateway`` per worker process. The first attempt that needs it starts it (``issue``); it
stops when the last live ticket is revoked, so nothing of it outlives the attempts (nor the
worker). A request goes:

    parse the path (``apis``) → check the agent's key against the live tickets (401 if unknown or
    revoked: nothing is forwarded) → hold it while the ticket's budget is spent → read the
    model → ``upstreams.route`` → ``Forwarder.send`` to each target in order until one answers →
    status and headers (hop-by-hop ones dropped), then the body chunk by chunk as it arrives,
    each chunk also fed to the response's meter → when the body ended: the ticket's totals, a
    ``usage`` event, and (in a task of its own, never delaying the stream) a ``usage`` row.

Upstream errors pass through with their status and body; an upstream that cannot be reached is a
502 in the kind's error shape. Requests go upstream with ``Accept-Encoding: identity``, so what
is metered is what is streamed. Real keys live only in ``Target.auth`` and the upstream request:
never in a response, an event or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from telecoder import tracing
from telecoder.gateway import apis, meter
from telecoder.gateway.apis import Call, Kind
from telecoder.gateway.budget import message as budget_message
from telecoder.gateway.endpoints import Registry, env_specs
from telecoder.gateway.forwarding import Forwarding
from telecoder.gateway.http import ClientGone, HTTPServer, Reply, Request
from telecoder.gateway.inbox import MAX_WAIT as MAX_INBOX_WAIT
from telecoder.gateway.inbox import PREFIX as INBOX_PREFIX
from telecoder.gateway.inbox import InboxAPI, is_inbox
from telecoder.gateway.meter import Meter, Metered
from telecoder.gateway.prices import Prices
from telecoder.gateway.routing import Routes
from telecoder.gateway.tickets import Ticket, Tickets
from telecoder.gateway.upstreams import KEY_VARS, URL_VARS, Target, Upstreams
from telecoder.settings import Settings
from telecoder.store.usage import UsageRow

if TYPE_CHECKING:
    from telecoder.store import Store

log = logging.getLogger(__name__)

# Never forwarded: RFC 9110's hop-by-hop headers, and what the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The operator's model endpoints and keys: an agent gets none of them, only the gateway's.
VENDOR_VARS = frozenset(
    {
        *(URL_VARS.values()),
        *(var for names in KEY_VARS.values() for var, _, _ in names),
    }
)
INBOX_URL, INBOX_TOKEN = "TELECODER_INBOX_URL", "TELECODER_INBOX_TOKEN"
_REQUEST_DROP = HOP_BY_HOP | apis.KEY_HEADERS | {"host", "content-length", "accept-encoding"}
_JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request as it goes upstream, but for the target's URL and key."""

    method: str
    call: Call
    headers: list[tuple[str, str]]
    body: bytes


class Forwarder:
    """Sends requests upstream over pooled connections."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=60.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, target: Target, request: Outgoing) -> httpx.Response:
        """Send ``request`` to ``target``; the response with its body still to be read (the
        caller closes it). Raises ``httpx.HTTPError`` when the target cannot be reached."""
        headers = [*request.headers, *target.auth, ("accept-encoding", "identity")]
        built = self.client.build_request(
            request.method, target.url(request.call), headers=headers, content=request.body
        )
        return await self.client.send(built, stream=True)

    async def close(self) -> None:
        await self.client.aclose()


class Gateway:
    def __init__(
        self,
        *,
        upstreams: Upstreams,
        store: Store | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        forwarder: Forwarder | None = None,
        forwarding: Forwarding | None = None,
        prices: Prices | None = None,
        inbox_wait: float | None = None,
    ) -> None:
        self.upstreams = upstreams
        # Backoff, retries and fallback (H3); None: each target once, in order.
        self.forwarding = forwarding
        self._registry_stop = asyncio.Event()
        self._registry_task: asyncio.Task[None] | None = None
        self.store = store
        self.prices = prices if prices is not None else Prices()
        self.host = host
        self.port = port
        self.tickets = Tickets()
        # The agents' inbox (``/inbox/v1``, ``gateway.inbox``): on the same port, the same keys.
        self.inbox = InboxAPI(self.tickets, store, max_wait=inbox_wait or MAX_INBOX_WAIT)
        self._forwarder = forwarder
        self._server: HTTPServer | None = None
        self._lock = asyncio.Lock()
        self.address: tuple[str, int] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store | None, environ: Mapping[str, str] | None = None
    ) -> Gateway:
        env = os.environ if environ is None else environ
        registry = Registry(
            store,
            env_specs(env),
            check_seconds=settings.endpoint_check_seconds,
            unhealthy_after=settings.endpoint_failures,
            environ=env,
        )
        routes = Routes.from_settings(
            settings.tier_trivial, settings.tier_standard, settings.tier_complex
        )
        return cls(
            upstreams=Upstreams.from_environment(env, routes=routes, registry=registry),
            store=store,
            host=settings.gateway_host,
            port=settings.gateway_port,
            forwarding=Forwarding(registry, retry_seconds=settings.gateway_retry_seconds),
            prices=Prices.from_setting(settings.prices),
            # An agent waiting for an answer prints nothing: stop before the stall watchdog.
            inbox_wait=min(MAX_INBOX_WAIT, settings.stall_seconds / 2),
        )

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.address is None:
            raise RuntimeError("the gateway is not running")
        host, port = self.address
        return f"http://{host}:{port}"

    async def start(self) -> None:
        async with self._lock:
            if self._server is None:
                await asyncio.to_thread(self.prices.preload)  # not on the first request
                server = HTTPServer(self._handle)
                self.address = await server.start(self.host, self.port)
                self._server = server
                if self._forwarder is None:
                    self._forwarder = Forwarder()
                if self.forwarding is not None:
                    await self._start_registry(self.forwarding.registry)
                log.info("gateway: listening on %s", self.url)

    async def _start_registry(self, registry: Registry) -> None:
        """Keep the endpoints' health and backoffs current while the gateway runs."""
        try:
            await registry.start()
        except Exception as e:  # a shared hint: the gateway works without it
            log.warning("gateway: endpoint registry: %s", e)
        self._registry_stop = asyncio.Event()
        self._registry_task = asyncio.create_task(
            registry.run(self._registry_stop), name="endpoint-registry"
        )

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        task, self._registry_task = self._registry_task, None
        if task is not None:
            self._registry_stop.set()
            done, _ = await asyncio.wait({task}, timeout=1)
            if not done:  # in the middle of a slow check: not worth keeping an attempt for
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        server, self._server = self._server, None
        if server is not None:
            await server.close()
            log.info("gateway: closed")
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            await forwarder.close()

    async def issue(self, ticket: Ticket) -> Ticket:
        """Make ``ticket``'s key valid here (starting the gateway if it is not running)."""
        await self.start()
        return self.tickets.add(ticket)

    async def revoke(self, ticket: Ticket, *, grace: float = 10.0) -> None:
        """End the ticket: its key is refused from now on; its usage rows are written (up to
        ``grace`` seconds); the gateway stops if no ticket is left."""
        self.tickets.remove(ticket)
        if ticket.pending:
            await asyncio.wait(set(ticket.pending), timeout=grace)
        async with self._lock:
            if not len(self.tickets):
                await self._close()

    def agent_env(self, env: Mapping[str, str], ticket: Ticket) -> dict[str, str]:
        """``env`` (what the operator passes to engines) with no real key or upstream URL left:
        the vendor variables name this gateway and the ticket's key instead."""
        return vendor_replaced(env, self.env(ticket))

    def env(self, ticket: Ticket) -> dict[str, str]:
        """The vendor variables an agent gets: every base URL at this gateway, every key the
        ticket's."""
        base, key = self.url, ticket.key
        return {
            "ANTHROPIC_BASE_URL": base + apis.PREFIXES[Kind.ANTHROPIC],
            "ANTHROPIC_API_KEY": key,
            "OPENAI_BASE_URL": base + apis.PREFIXES[Kind.OPENAI],
            "OPENAI_API_KEY": key,
            "GOOGLE_GEMINI_BASE_URL": base + apis.PREFIXES[Kind.GEMINI],
            "GEMINI_API_KEY": key,
            "OLLAMA_HOST": f"{base}{apis.PREFIXES[Kind.OLLAMA]}/{key}",
        }

    def inbox_env(self, ticket: Ticket) -> dict[str, str]:
        """What an agent's ``telecoder-inbox`` tool reads: the inbox here, the ticket's key
        (none when the gateway has no store to keep messages in)."""
        if self.store is None:
            return {}
        return {INBOX_URL: self.url + INBOX_PREFIX, INBOX_TOKEN: ticket.key}

    # --- one request --------------------------------------------------------------------------

    async def _admit(self, request: Request, reply: Reply) -> tuple[Call, Ticket] | None:
        """The call and the ticket of a request that may go upstream; None when it was
        answered here: no such API (404), an unknown or revoked key (401), a spent budget held
        until the ticket ended (402)."""
        call = apis.parse(request.method, request.target)
        if call is None:
            message = f"no model API at {request.target.split('?')[0]} (see the gateway's paths)"
            await reply.whole(404, _JSON, json.dumps({"error": message}).encode())
            return None
        ticket = self.tickets.get(apis.presented_key(call, dict(request.headers)))
        if ticket is None:
            message = (
                "unknown or revoked TeleCoder gateway key: a key is valid only while its "
                "session's attempt runs"
            )
            await reply.whole(401, _JSON, apis.error_body(call.kind, 401, message))
            return None
        if ticket.over_budget and not await _hold(ticket):
            assert ticket.budget_usd is not None
            message = budget_message(ticket.spent_usd, ticket.budget_usd)
            await reply.whole(402, _JSON, apis.error_body(call.kind, 402, message))
            return None
        return Call(call.kind, call.rest, apis.without_key(call.query), call.api), ticket

    async def _handle(self, request: Request, reply: Reply) -> None:
        if is_inbox(request.target):
            await self.inbox.handle(request, reply)
            return
        started = time.perf_counter()
        admitted = await self._admit(request, reply)
        if admitted is None:
            return
        call, ticket = admitted
        payload = _json(request.body) if call.api is not None else None
        model = apis.request_model(call, payload)
        body = request.body
        if call.api is not None and payload is not None:
            prepared = meter.prepare(call.api, payload)  # e.g. ask a stream for its usage
            if prepared is not payload:
                body = json.dumps(prepared).encode()
        outgoing = Outgoing(request.method, call, _request_headers(request.headers), body)
        targets = self.upstreams.route(call, model, ticket)
        if self.forwarding is not None:
            assert self._forwarder is not None
            response, target, error = await self.forwarding.send(
                targets, outgoing, ticket, self._forwarder.send
            )
        else:
            response, target, error = await self._send(targets, outgoing)
        if target is not None and target.model is not None:
            model = target.model  # asked for by routing
        if response is None:
            name = target.endpoint if target is not None else call.kind.value
            message = f"the gateway could not reach its {name} endpoint: {error}"
            await reply.whole(502, _JSON, apis.error_body(call.kind, 502, message))
            self._record(ticket, call, target, model, 502, started, None, payload, None)
            return
        assert target is not None
        streamed = apis.streamed(call, payload)
        metering: Meter | Inflating | None = None
        if call.api is not None:
            metering = meter.meter_for(call.api, streamed=streamed, request_model=model)
            if response.headers.get("content-encoding", "identity") != "identity":
                metering = Inflating(metering)  # compressed although asked not to be
        first: float | None = None
        chunks = response.aiter_raw()
        try:
            await reply.start(response.status_code, _response_headers(response))
            async for chunk in chunks:
                if first is None:
                    first = time.perf_counter()
                if metering is not None:  # metered before it is relayed: the upstream charged it
                    metering.feed(chunk)
                await reply.send(chunk)
            await reply.end()
        except ClientGone:
            # The agent hung up (a CLI drops its background requests when it exits), but the
            # upstream charges for the answer: read what is already coming, for its usage.
            if metering is not None:
                await _drain(chunks, metering)
            raise
        except httpx.HTTPError as e:  # the upstream broke off: so does the response
            log.warning("gateway: %s broke off a response: %s", target.endpoint, e)
            raise ClientGone from e
        finally:
            await response.aclose()
            status = response.status_code
            self._record(ticket, call, target, model, status, started, first, payload, metering)

    async def _send(
        self, targets: list[Target], outgoing: Outgoing
    ) -> tuple[httpx.Response | None, Target | None, str]:
        """The first answer of ``targets``, tried in order; or None, the last tried and why."""
        assert self._forwarder is not None
        error = "no endpoint is configured"
        tried: Target | None = None
        for target in targets:
            tried = target
            try:
                return await self._forwarder.send(target, outgoing), target, ""
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
                log.warning("gateway: %s unreachable: %s", target.endpoint, error)
        return None, tried, error

    # --- metering -----------------------------------------------------------------------------

    def _record(
        self,
        ticket: Ticket,
        call: Call,
        target: Target | None,
        model: str | None,
        status: int,
        started: float,
        first: float | None,
        payload: Mapping[str, Any] | None,
        metering: Meter | Inflating | None,
    ) -> None:
        """Count a model request on its ticket, tell the session, and store its row (in a
        task: never in the way of a response)."""
        if call.api is None:
            return
        ended = time.perf_counter()
        used = metering.result() if metering is not None else None
        cost: float | None = None
        if used is not None:
            model = used.model or model
            try:
                # Whatever API it spoke, a model Ollama answered is priced by overrides only.
                local = target is not None and target.kind == Kind.OLLAMA
                cost = self.prices.cost(None, used, api=apis.OLLAMA if local else call.api)
            except Exception:  # a price table must never break metering
                log.warning("gateway: no price for %s", model, exc_info=True)
        fresh, output, read, write = (
            (used.input_tokens, used.output_tokens, used.cache_read_tokens, used.cache_write_tokens)
            if used is not None
            else (0, 0, 0, 0)
        )
        ticket.charge(
            cost_usd=cost,
            input_tokens=fresh + read + write,
            output_tokens=output,
            cached_tokens=read,
            model=model,
            ok=200 <= status < 300,
        )
        ticket.tell("usage", ticket.totals())
        row = UsageRow(
            endpoint=target.endpoint if target is not None else call.kind.value,
            api=call.api,
            status=status,
            latency_ms=round((ended - started) * 1000, 3),
            ttft_ms=round((first - started) * 1000, 3) if first is not None else None,
            session_id=ticket.session_id,
            attempt=ticket.attempt,
            repo=ticket.repo,
            engine=ticket.engine,
            user=ticket.user,
            model=model,
            input_tokens=fresh,
            output_tokens=output,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cost_usd=cost,
            streamed=apis.streamed(call, payload),
        )
        tracing.model_request(
            ticket.session_id,
            ticket.attempt,
            ended - started,
            status,
            endpoint=row.endpoint,
            model=model,
            api=call.api,
            input_tokens=fresh,
            output_tokens=output,
            cost_usd=cost,
        )
        if self.store is None:
            return
        task = asyncio.get_running_loop().create_task(self._write(row))
        ticket.pending.add(task)
        task.add_done_callback(ticket.pending.discard)

    async def _write(self, row: UsageRow) -> None:
        assert self.store is not None
        try:
            await self.store.usage.record(row)
        except Exception:
            log.warning("gateway: usage of session %s not recorded", row.session_id, exc_info=True)


# What is read, for its usage, of an answer whose client hung up.
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 5.0


async def _drain(chunks: AsyncIterator[bytes], metering: Meter | Inflating) -> None:
    """Feed the meter the rest of an answer nobody reads: at most DRAIN_BYTES, DRAIN_SECONDS."""
    taken = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in chunks:
                metering.feed(chunk)
                taken += len(chunk)
                if taken >= DRAIN_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError):
        return


class Inflating:
    """A meter fed the decoded bytes of a gzip- or deflate-encoded body (the client gets the
    bytes as they came); other encodings leave it unfed: no usage, never a wrong one."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._inflate: Any = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header

    def feed(self, chunk: bytes) -> None:
        if self._inflate is None:
            return
        try:
            self.meter.feed(self._inflate.decompress(chunk))
        except zlib.error:
            self._inflate = None

    def result(self) -> Metered | None:
        return self.meter.result() if self._inflate is not None else None


def vendor_replaced(env: Mapping[str, str], by: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every vendor variable (model endpoint or key) taken from ``by`` instead:
    the gateway's, or none."""
    kept = {k: v for k, v in env.items() if k not in VENDOR_VARS}
    return {**kept, **{k: v for k, v in by.items() if k in VENDOR_VARS}}


async def _hold(ticket: Ticket) -> bool:
    """Hold a request while its ticket's budget is spent (telling the session once); whether
    it may go on (False: the ticket was revoked meanwhile)."""
    while ticket.over_budget and not ticket.revoked:
        if not ticket.budget_told:
            ticket.budget_told = True
            if ticket.on_budget is not None:
                assert ticket.budget_usd is not None
                ticket.on_budget(ticket.spent_usd, ticket.budget_usd)
        await ticket.changed()
    return not ticket.revoked


def _request_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    named = {t.strip() for k, v in headers if k == "connection" for t in v.lower().split(",")}
    return [(k, v) for k, v in headers if k not in _REQUEST_DROP and k not in named]


def _json(body: bytes) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    named = {
        token.strip().lower()
        for value in response.headers.get_list("connection")
        for token in value.split(",")
    }
    return [
        (k, v)
        for k, v in response.headers.raw
        if (name := k.decode("latin-1").lower()) not in HOP_BY_HOP and name not in named
    ]
