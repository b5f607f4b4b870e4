"""The endpoint registry: where model requests can go, and whether each place works.

Endpoints come from two places: the operator's environment (``anthropic``, ``openai``,
``gemini``, ``ollama``: their ``*_BASE_URL`` and keys) and the ``endpoints`` table
(``telecoder endpoints add``). Keys are never stored: an endpoint names the variable of the
gateway's environment that holds its key (``--key-env``).

Health comes from checks (``GET /v1/models`` for OpenAI and Anthropic, Gemini's
``GET /v1beta/models``, Ollama's ``GET /api/tags``: the models found are kept) run every
``TELECODER_ENDPOINT_CHECK_SECONDS`` by the :class:`Registry`'s loop, and from real traffic:
``TELECODER_ENDPOINT_FAILURES`` failed requests in a row mark an endpoint unhealthy until a
request or a check succeeds. What one gateway learns is written to the table, so every process
and host sees it, the shared backoff included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from telecoder.errors import BadInput
from telecoder.gateway.backoff import Backoffs
from telecoder.store import EndpointRow, Store

log = logging.getLogger(__name__)

KINDS = ("anthropic", "openai", "gemini", "ollama")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
CHECK_TIMEOUT_SECONDS = 10.0
SYNC_SECONDS = 2.0  # how often a gateway reads what other processes wrote

Source = Literal["env", "registered"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """Where an endpoint is and how a key reaches it (the key itself stays in the env)."""

    name: str
    url: str
    kind: str
    key_env: str | None = None
    source: Source = "registered"

    def key(self, environ: Mapping[str, str] | None = None) -> str | None:
        if self.key_env is None:
            return None
        return (os.environ if environ is None else environ).get(self.key_env) or None


# name, kind, base URL variable, default URL, key variables (the first set wins)
_ENV: tuple[tuple[str, str, str, str | None, tuple[str, ...]], ...] = (
    ("anthropic", "anthropic", "ANTHROPIC_BASE_URL", "https://api.anthropic.com",
     ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")),
    ("openai", "openai", "OPENAI_BASE_URL", "https://api.openai.com/v1", ("OPENAI_API_KEY",)),
    ("gemini", "gemini", "GOOGLE_GEMINI_BASE_URL", "https://generativelanguage.googleapis.com",
     ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
    ("ollama", "ollama", "OLLAMA_HOST", None, ("OLLAMA_API_KEY",)),
)  # fmt: skip
ENV_NAMES = frozenset(name for name, *_ in _ENV)


def env_specs(environ: Mapping[str, str] | None = None) -> list[Spec]:
    """The endpoints of the operator's environment: each kind whose key or base URL is set."""
    env = os.environ if environ is None else environ
    found = []
    for name, kind, url_var, default, key_vars in _ENV:
        url = env.get(url_var) or default
        key_env = next((v for v in key_vars if env.get(v)), None)
        if url is None or (key_env is None and not env.get(url_var)):
            continue
        if kind == "ollama" and "://" not in url:
            url = f"http://{url}"  # OLLAMA_HOST may be host:port
        found.append(Spec(name=name, url=url, kind=kind, key_env=key_env, source="env"))
    return found


def validate(name: str, url: str, kind: str, key_env: str | None) -> Spec:
    """A new endpoint as ``endpoints add`` gives it; BadInput saying what is wrong."""
    if not NAME.match(name):
        raise BadInput(
            f"endpoint name {name!r}: use lowercase letters, digits, '-', '_' or '.' (≤ 64)"
        )
    if name in ENV_NAMES:
        raise BadInput(
            f"{name!r} is the endpoint of the operator's environment; choose another name "
            f"(e.g. {name}-2)"
        )
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"the endpoint URL must be http:// or https://, not {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise BadInput("the endpoint URL must carry no credentials, query or fragment")
    if kind == "ollama" and parts.path.rstrip("/").endswith("/v1"):
        raise BadInput(
            f"an Ollama endpoint is the server's root URL ({url.rstrip('/')[:-3]}), not its /v1 "
            "API: the gateway sends OpenAI-compatible requests to /v1 itself"
        )
    if key_env is not None and not ENV_VAR.match(key_env):
        raise BadInput(f"--key-env names an environment variable, not {key_env!r}")
    return Spec(name=name, url=url.rstrip("/"), kind=kind, key_env=key_env)


# --- checks ---


@dataclass(frozen=True, slots=True)
class Check:
    healthy: bool
    latency_ms: float | None
    models: list[str] | None  # None: not found out (the check failed)
    error: str | None


def models_url(kind: str, url: str) -> str:
    """Where an endpoint lists its models."""
    base = url.rstrip("/")
    if kind == "ollama":
        return f"{base}/api/tags"
    if kind == "gemini":
        return f"{base}/models" if base.endswith(("/v1beta", "/v1")) else f"{base}/v1beta/models"
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


def auth_headers(kind: str, key: str | None, key_env: str | None = None) -> dict[str, str]:
    headers = {"anthropic-version": "2023-06-01"} if kind == "anthropic" else {}
    if key is None:
        return headers
    if kind == "anthropic" and key_env != "ANTHROPIC_AUTH_TOKEN":
        headers["x-api-key"] = key
    elif kind == "gemini":
        headers["x-goog-api-key"] = key
    else:
        headers["authorization"] = f"Bearer {key}"
    return headers


def _models(kind: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    if kind == "ollama":
        items = body.get("models") or []
        return [str(m.get("name") or m.get("model")) for m in items if isinstance(m, dict)]
    if kind == "gemini":
        items = body.get("models") or []
        return [str(m.get("name", "")).removeprefix("models/") for m in items if m.get("name")]
    return [str(m["id"]) for m in body.get("data") or [] if isinstance(m, dict) and "id" in m]


def _said(response: httpx.Response) -> str:
    """The error message an endpoint gave, short."""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        text = error.get("message") if isinstance(error, dict) else error
    except ValueError:
        text = None
    text = " ".join(str(text or response.reason_phrase or "").split())
    return text[:200]


async def check(
    spec: Spec,
    *,
    client: httpx.AsyncClient,
    environ: Mapping[str, str] | None = None,
    within: float = CHECK_TIMEOUT_SECONDS,
) -> Check:
    """Ask the endpoint for its models: healthy when it answers 2xx. The key never appears in
    the result, whatever the endpoint echoes."""
    key = spec.key(environ)
    if spec.key_env is not None and key is None:
        return Check(False, None, None, f"{spec.key_env} is not set in the gateway's environment")
    started = time.monotonic()
    try:
        response = await client.get(
            models_url(spec.kind, spec.url),
            headers=auth_headers(spec.kind, key, spec.key_env),
            params={"pageSize": 1000} if spec.kind == "gemini" else None,
            timeout=within,
        )
    except httpx.TimeoutException:
        return Check(False, None, None, f"no answer within {within:g}s")
    except httpx.HTTPError as e:
        return Check(False, None, None, _masked(f"cannot connect: {e or type(e).__name__}", key))
    latency = round((time.monotonic() - started) * 1000, 1)
    if response.is_success:
        try:
            models = _models(spec.kind, response.json())
        except ValueError:
            models = []
        return Check(True, latency, models, None)
    error = f"HTTP {response.status_code}: {_said(response)}".rstrip(": ")
    return Check(False, latency, None, _masked(error, key))


def _masked(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


# --- the registry ---


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """An endpoint as ``endpoints list`` shows it: where, and how it is doing."""

    spec: Spec
    state: EndpointRow | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "name": self.spec.name,
            "url": self.spec.url,
            "kind": self.spec.kind,
            "key_env": self.spec.key_env,
            "source": self.spec.source,
            "healthy": s.healthy if s else None,
            "latency_ms": s.latency_ms if s else None,
            "models": list(s.models) if s else [],
            "error": s.error if s else None,
            "checked_at": s.checked_at if s else None,
            "failures": s.failures if s else 0,
            "backoff_until": (
                s.backoff_until if s and (s.backoff_until or 0) > time.time() else None
            ),
        }


def spec_of(row: EndpointRow) -> Spec:
    source: Source = "env" if row.name in ENV_NAMES else "registered"
    return Spec(name=row.name, url=row.url, kind=row.kind, key_env=row.key_env, source=source)


async def listing(store: Store, env: Sequence[Spec]) -> list[Endpoint]:
    """Every endpoint: this environment's, then the table's (with what gateways found)."""
    rows = {r.name: r for r in await store.endpoints.list()}
    found = [Endpoint(spec=s, state=rows.pop(s.name, None)) for s in env]
    found += [Endpoint(spec=spec_of(r), state=r) for r in rows.values()]
    return found


async def find(store: Store, env: Sequence[Spec], name: str) -> Endpoint | None:
    return next((e for e in await listing(store, env) if e.spec.name == name), None)


async def check_and_record(
    store: Store,
    endpoints: Iterable[Spec],
    *,
    client: httpx.AsyncClient,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Check]:
    """Check each endpoint now, at once, and record what was found."""
    specs = list(endpoints)
    results = await asyncio.gather(*(check(s, client=client, environ=environ) for s in specs))
    for spec, result in zip(specs, results, strict=True):
        if spec.source == "env":
            await store.endpoints.ensure(
                spec.name, url=spec.url, kind=spec.kind, key_env=spec.key_env
            )
        await store.endpoints.record_check(
            spec.name,
            healthy=result.healthy,
            latency_ms=result.latency_ms,
            error=result.error,
            models=result.models,
        )
    return dict(zip([s.name for s in specs], results, strict=True))


class Registry:
    """A gateway's view of its endpoints: where each is, whether to use it, its backoff.

    ``run`` keeps it current: every ``SYNC_SECONDS`` it reads the table (endpoints added or
    removed, health and backoffs other processes found) and, every ``check_seconds``, checks the
    endpoints no process checked lately. ``failed``/``succeeded`` count real traffic.
    """

    def __init__(
        self,
        store: Store | None,
        env: Sequence[Spec],
        *,
        check_seconds: float = 60.0,
        unhealthy_after: int = 3,
        backoffs: Backoffs | None = None,
        client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] | None = None,
        on_change: Callable[[str, bool, str | None], None] | None = None,
    ) -> None:
        self.store = store
        self.env = list(env)
        self.check_seconds = check_seconds
        self.unhealthy_after = unhealthy_after
        self.backoffs = backoffs or Backoffs()
        self._client = client
        self._environ = environ
        self._on_change = on_change
        self.specs: dict[str, Spec] = {s.name: s for s in self.env}
        self._healthy: dict[str, bool | None] = {}
        self._failures: dict[str, int] = {}
        self._pending: set[asyncio.Task[None]] = set()

    # --- what routing asks ---

    def kinds(self) -> dict[str, str]:
        return {name: s.kind for name, s in self.specs.items()}

    def default(self, kind: str) -> str | None:
        """The endpoint of the environment for ``kind``."""
        return next((s.name for s in self.env if s.kind == kind), None)

    def usable(self, name: str) -> bool:
        """Not marked unhealthy, and not backing off."""
        return self._healthy.get(name) is not False and not self.backoffs.of(name).closed

    def healthy(self, name: str) -> bool | None:
        return self._healthy.get(name)

    # --- what traffic tells ---

    def failed(self, name: str, error: str) -> None:
        """A request to ``name`` failed (no answer, or a 5xx the gateway gave up on)."""
        count = self._failures.get(name, 0) + 1
        self._failures[name] = count
        down = count >= self.unhealthy_after and self._healthy.get(name) is not False
        if down:
            self._healthy[name] = False
            if self._on_change is not None:
                self._on_change(name, False, error)
        message = f"{count} requests in a row failed: {error}"
        if self.store is None:
            return
        self._later(
            self.store.endpoints.record_traffic(
                name, failures=count, healthy=False if down else None, error=message
            )
        )

    def succeeded(self, name: str) -> None:
        if not self._failures.get(name) and self._healthy.get(name) is not False:
            return  # nothing to write: the usual case costs nothing
        was_down = self._healthy.get(name) is False
        self._failures[name] = 0
        self._healthy[name] = True
        if was_down and self._on_change is not None:
            self._on_change(name, True, None)
        if self.store is None:
            return
        self._later(
            self.store.endpoints.record_traffic(
                name, failures=0, healthy=True if was_down else None, error=None
            )
        )

    def backing_off(self, name: str, until: float) -> None:
        """Share a backoff with the other gateways (best effort)."""
        if self.store is None:
            return
        self._later(self.store.endpoints.set_backoff(name, until))

    def _later(self, write: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(write))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _quietly(write: Any) -> None:
        try:
            await write
        except Exception as e:  # the table is a shared hint: traffic does not wait on it
            log.warning("could not record an endpoint's state: %s", e)

    # --- keeping current ---

    async def start(self) -> None:
        """Rows for the environment's endpoints (so their state can be shared), then a sync."""
        if self.store is None:
            return
        for spec in self.env:
            await self.store.endpoints.ensure(
                spec.name, url=spec.url, kind=spec.kind, key_env=spec.key_env
            )
        await self.sync()

    async def sync(self) -> list[EndpointRow]:
        if self.store is None:
            return []
        rows = await self.store.endpoints.list()
        specs = {s.name: s for s in self.env}
        for row in rows:
            if row.name not in specs:
                specs[row.name] = spec_of(row)
            if row.healthy is not None:
                self._healthy[row.name] = row.healthy
                if row.healthy:
                    self._failures[row.name] = 0
        self.specs = specs
        await self.backoffs.adopt({r.name: r.backoff_until for r in rows})
        return rows

    async def check_due(self, rows: Sequence[EndpointRow]) -> None:
        """Check the endpoints no process checked within ``check_seconds``."""
        now = time.time()
        checked = {r.name: r.checked_at for r in rows}
        due = [
            s for s in self.specs.values() if (checked.get(s.name) or 0) < now - self.check_seconds
        ]
        if not due or self.store is None:
            return
        client = self._client or httpx.AsyncClient()
        try:
            results = await check_and_record(self.store, due, client=client, environ=self._environ)
        finally:
            if self._client is None:
                await client.aclose()
        for name, result in results.items():
            was = self._healthy.get(name)
            self._healthy[name] = result.healthy
            if result.healthy:
                self._failures[name] = 0
            if was is not None and was != result.healthy and self._on_change is not None:
                self._on_change(name, result.healthy, result.error)

    async def run(self, stop: asyncio.Event) -> None:
        """Sync and check until ``stop`` is set; a failing database is waited out."""
        last_check = 0.0
        while not stop.is_set():
            try:
                rows = await self.sync()
                if time.monotonic() - last_check >= min(self.check_seconds, 60.0) or not last_check:
                    last_check = time.monotonic()
                    await self.check_due(rows)
            except Exception as e:
                log.warning("endpoint registry: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SYNC_SECONDS)
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
