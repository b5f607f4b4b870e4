"""Where the gateway sends a request: ``Target`` and ``Upstreams.route``.

Minimal for now: one target per kind, from the operator's environment (the variables the agents
used to get), named after its kind:

=========  =====================================================  ==============================
endpoint   base URL                                               key
=========  =====================================================  ==============================
anthropic  ``ANTHROPIC_BASE_URL`` (https://api.anthropic.com)       ``ANTHROPIC_API_KEY`` as
                                                                  ``x-api-key``, else
                                                                  ``ANTHROPIC_AUTH_TOKEN`` as a
                                                                  bearer token
openai     ``OPENAI_BASE_URL`` (https://api.openai.com/v1)          ``OPENAI_API_KEY`` (bearer)
gemini     ``GOOGLE_GEMINI_BASE_URL``                             ``GEMINI_API_KEY``, else
           (https://generativelanguage.googleapis.com)            ``GOOGLE_API_KEY``
                                                                  (``x-goog-api-key``)
ollama     ``OLLAMA_HOST`` (http://127.0.0.1:11434)                 ``OLLAMA_API_KEY`` (bearer), if
                                                                  set
=========  =====================================================  ==============================

``route`` returns the targets to try, in order; the forwarding loop sends to the first and (once
retries and fallbacks exist) moves along the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from telecoder.gateway.apis import Call, Kind
from telecoder.gateway.routing import Hop, Routes
from telecoder.gateway.tickets import Ticket

if TYPE_CHECKING:
    from telecoder.gateway.endpoints import Registry

DEFAULT_URLS: Mapping[Kind, str] = {
    Kind.ANTHROPIC: "https://api.anthropic.com",
    Kind.OPENAI: "https://api.openai.com/v1",
    Kind.GEMINI: "https://generativelanguage.googleapis.com",
    Kind.OLLAMA: "http://127.0.0.1:11434",
}
URL_VARS: Mapping[Kind, str] = {
    Kind.ANTHROPIC: "ANTHROPIC_BASE_URL",
    Kind.OPENAI: "OPENAI_BASE_URL",
    Kind.GEMINI: "GOOGLE_GEMINI_BASE_URL",
    Kind.OLLAMA: "OLLAMA_HOST",
}
# (variable, header, scheme) in order of preference: the first one set is the key.
KEY_VARS: Mapping[Kind, tuple[tuple[str, str, str], ...]] = {
    Kind.ANTHROPIC: (
        ("ANTHROPIC_API_KEY", "x-api-key", ""),
        ("ANTHROPIC_AUTH_TOKEN", "authorization", "Bearer "),
    ),
    Kind.OPENAI: (("OPENAI_API_KEY", "authorization", "Bearer "),),
    Kind.GEMINI: (
        ("GEMINI_API_KEY", "x-goog-api-key", ""),
        ("GOOGLE_API_KEY", "x-goog-api-key", ""),
    ),
    Kind.OLLAMA: (("OLLAMA_API_KEY", "authorization", "Bearer "),),
}


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream to send a request to."""

    endpoint: str  # its name (``endpoints.name``)
    kind: Kind
    base_url: str  # what the call's path is appended to
    auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # the real key's headers
    model: str | None = None  # ask for this model instead of the requested one (fallbacks)

    def url(self, call: Call) -> str:
        base = self.base_url.rstrip("/")
        if self.kind == Kind.OLLAMA and call.kind == Kind.OPENAI:
            base += "/v1"  # Ollama's OpenAI-compatible API (routing.KINDS_OF_API)
        return base + call.upstream_path()


def from_environment(env: Mapping[str, str]) -> dict[Kind, Target]:
    """A target per kind from the operator's variables (defaults where unset)."""
    targets: dict[Kind, Target] = {}
    for kind in Kind:
        url = (env.get(URL_VARS[kind]) or "").strip() or DEFAULT_URLS[kind]
        if "://" not in url:  # OLLAMA_HOST is often host:port
            url = f"http://{url}"
        auth: tuple[tuple[str, str], ...] = ()
        for var, header, scheme in KEY_VARS[kind]:
            if value := (env.get(var) or "").strip():
                auth = ((header, scheme + value),)
                break
        targets[kind] = Target(endpoint=kind.value, kind=kind, base_url=url, auth=auth)
    return targets


def auth_for(kind: Kind, key: str | None) -> tuple[tuple[str, str], ...]:
    """The headers that carry ``key`` to an endpoint of ``kind``."""
    if not key:
        return ()
    _, header, scheme = KEY_VARS[kind][0]
    return ((header, scheme + key),)


class Upstreams:
    """The endpoints the gateway forwards to, and which to try for a request.

    With ``routes`` (the tiers' lists) and ``registry`` (registered endpoints), a session's
    model requests follow its tier's list (``routing.py``); else each kind's endpoint of the
    operator's environment.
    """

    def __init__(
        self,
        targets: Mapping[Kind, Target],
        *,
        routes: Routes | None = None,
        registry: Registry | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.targets = dict(targets)
        self.routes = routes
        self.registry = registry
        self._environ = environ

    @classmethod
    def from_environment(cls, env: Mapping[str, str], **kw: Any) -> Upstreams:
        return cls(from_environment(env), environ=env, **kw)

    def route(self, call: Call, model: str | None, ticket: Ticket) -> list[Target]:
        """The targets to try for ``call`` (asking for ``model``, for ``ticket``), in order."""
        target = self.targets.get(call.kind)
        if self.routes is None or call.api is None:
            return [target] if target is not None else []
        kinds = {t.endpoint: t.kind.value for t in self.targets.values()}
        if self.registry is not None:
            kinds = {**self.registry.kinds(), **kinds}
        hops = self.routes.hops(
            call.api,
            tier=ticket.tier,
            pinned=ticket.model is not None,
            kinds=kinds,
            default=target.endpoint if target is not None else None,
            model=model,
        )
        return [t for hop in hops if (t := self._target(hop)) is not None]

    def _target(self, hop: Hop) -> Target | None:
        for target in self.targets.values():
            if target.endpoint == hop.endpoint:
                return replace(target, model=hop.model)
        spec = self.registry.specs.get(hop.endpoint) if self.registry is not None else None
        if spec is None:
            return None
        kind = Kind(spec.kind)
        return Target(
            endpoint=spec.name,
            kind=kind,
            base_url=spec.url,
            auth=auth_for(kind, spec.key(self._environ)),
            model=hop.model,
        )

    def secrets(self) -> list[str]:
        """The real keys: what must never show (masking)."""
        found = [value.split(" ", 1)[-1] for t in self.targets.values() for _, value in t.auth]
        if self.registry is not None:
            found += [k for s in self.registry.specs.values() if (k := s.key(self._environ))]
        return found
