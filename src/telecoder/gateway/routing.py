"""Routing: which endpoint and model a session's model request goes to, and where it falls back.

A session has a **tier** — ``trivial``, ``standard`` or ``complex`` — set by its caller
(``--tier``, ``tier`` in the API) or chosen by :func:`choose_tier` from the task. Each tier maps
to an ordered list of ``endpoint:model`` entries in the settings
(``TELECODER_TIER_TRIVIAL=anthropic:claude-haiku-4-5,openai:gpt-5-mini``). A request is sent to
the first entry whose endpoint speaks the request's API (no protocol translation) with its
``model`` rewritten (the JSON body's ``model``; for Gemini, the path); when that endpoint is
unhealthy or keeps failing, the gateway falls back to the next one and tells the session.

A session that pins its model (``--model``) is not routed by tier: its requests go where they
ask, to the endpoint of their API. A model that names its endpoint the way a tier's entry does
(``--model local:qwen2.5-coder:7b``, ``local`` a registered endpoint) goes to that endpoint, asked
for the rest (``qwen2.5-coder:7b``): how a session pins a model of a registered endpoint.

An Ollama endpoint serves OpenAI's Chat Completions as well as its own API (Ollama answers it
at ``/v1``): one registration carries the ``builtin`` agent on Ollama's native API and the CLIs
that speak only OpenAI's.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from telecoder.errors import BadInput


class Tier(enum.StrEnum):
    TRIVIAL = "trivial"
    STANDARD = "standard"
    COMPLEX = "complex"


TIERS = tuple(t.value for t in Tier)

# The endpoint kinds that serve each API the gateway speaks (layout.md's names).
KINDS_OF_API: Mapping[str, tuple[str, ...]] = {
    "anthropic": ("anthropic",),
    "openai-chat": ("openai", "ollama"),  # Ollama's OpenAI-compatible API, at /v1
    "openai-responses": ("openai",),
    "gemini": ("gemini",),
    "ollama": ("ollama",),
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``endpoint:model`` of a tier's list."""

    endpoint: str
    model: str

    def __str__(self) -> str:
        return f"{self.endpoint}:{self.model}"


def parse_tier(value: str | None) -> Tier | None:
    if value is None or not value.strip():
        return None
    try:
        return Tier(value.strip().lower())
    except ValueError:
        raise BadInput(f"unknown tier {value!r} (known: {', '.join(TIERS)})") from None


def parse_chain(entries: Iterable[str], *, setting: str = "tier") -> tuple[Entry, ...]:
    """``["anthropic:claude-haiku-4-5", "openai:gpt-5-mini"]`` -> entries, in order."""
    chain = []
    for raw in entries:
        text = raw.strip()
        if not text:
            continue
        endpoint, sep, model = text.partition(":")
        if not sep or not endpoint.strip() or not model.strip():
            raise BadInput(f"{setting}: {text!r} is not endpoint:model (e.g. anthropic:claude-…)")
        chain.append(Entry(endpoint.strip(), model.strip()))
    return tuple(chain)


# --- choosing a tier ---

TRIVIAL_LABELS = frozenset(
    {"trivial", "typo", "docs", "documentation", "chore", "easy", "good first issue"}
)
COMPLEX_LABELS = frozenset({"complex", "hard", "epic", "architecture", "refactor", "security"})
SHORT_PROMPT = 200  # characters: at most this, and at most one file named: trivial
LONG_PROMPT = 2000  # characters: more than this: complex
MANY_FILES = 5  # files named: this many or more: complex

_EXTENSIONS = (
    "py|pyi|js|mjs|cjs|ts|tsx|jsx|go|rs|java|kt|kts|rb|php|c|h|cc|cpp|hpp|cs|swift|m|scala|"
    "md|rst|txt|yml|yaml|json|toml|ini|cfg|sql|sh|bash|html|css|scss|vue|svelte|lock|xml|proto"
)
_FILE = re.compile(rf"(?<![\w@])(?:[\w.-]+/)*[\w-]+\.(?:{_EXTENSIONS})(?![\w/])")


def files_named(prompt: str) -> set[str]:
    """The file paths a prompt names (``src/app.py``, ``README.md``)."""
    return set(_FILE.findall(prompt))


def labels_of(origin: Mapping[str, Any] | None) -> set[str]:
    """The labels a session's origin carries (an issue's, a ticket's), lowercased."""
    raw = (origin or {}).get("labels") or []
    if isinstance(raw, str):
        raw = raw.split(",")
    return {str(label).strip().lower() for label in raw if str(label).strip()}


def choose_tier(prompt: str, origin: Mapping[str, Any] | None = None) -> Tier:
    """A tier for a task no caller gave one: by its labels, else its size.

    A label ``tier:X`` (or ``telecoder:X``) names it; a label like ``typo`` or ``docs`` makes
    it trivial, one like ``refactor`` or ``security`` complex. Otherwise: a short prompt naming
    at most one file is trivial; a long one, or one naming many files, is complex.
    """
    labels = labels_of(origin)
    for label in labels:
        prefix, _, name = label.partition(":")
        if prefix in ("tier", "telecoder") and name in TIERS:
            return Tier(name)
    if labels & COMPLEX_LABELS:
        return Tier.COMPLEX
    if labels & TRIVIAL_LABELS:
        return Tier.TRIVIAL
    text = prompt.strip()
    files = len(files_named(text))
    if len(text) > LONG_PROMPT or files >= MANY_FILES:
        return Tier.COMPLEX
    if len(text) <= SHORT_PROMPT and files <= 1:
        return Tier.TRIVIAL
    return Tier.STANDARD


# --- the route of one request ---


@dataclass(frozen=True, slots=True)
class Hop:
    """Where one try of a request goes: an endpoint, and the model to ask it for (None: the
    model the request names)."""

    endpoint: str
    model: str | None = None


class Routes:
    """The tiers' lists, from the settings, and the routes they give a request."""

    def __init__(self, chains: Mapping[Tier, Sequence[Entry]]) -> None:
        self.chains = {tier: tuple(chains.get(tier, ())) for tier in Tier}

    @classmethod
    def from_settings(
        cls, trivial: Iterable[str], standard: Iterable[str], complex_: Iterable[str]
    ) -> Routes:
        return cls(
            {
                Tier.TRIVIAL: parse_chain(trivial, setting="TELECODER_TIER_TRIVIAL"),
                Tier.STANDARD: parse_chain(standard, setting="TELECODER_TIER_STANDARD"),
                Tier.COMPLEX: parse_chain(complex_, setting="TELECODER_TIER_COMPLEX"),
            }
        )

    def hops(
        self,
        api: str,
        *,
        tier: str | None,
        pinned: bool,
        kinds: Mapping[str, str],
        default: str | None,
        model: str | None = None,
    ) -> list[Hop]:
        """The endpoints to try for a request of ``api`` asking for ``model``, in order.

        ``kinds``: every endpoint known, name -> kind. ``default``: the endpoint of this API
        from the operator's environment. A model naming its endpoint: that endpoint alone. A
        session that pinned its model, a tier without a list, or a list with no entry speaking
        ``api``: the default endpoint, model unchanged.
        """
        named = named_hop(model, api, kinds)
        if named is not None:
            return [named]
        served = KINDS_OF_API.get(api, ())
        if not pinned and tier in TIERS and served:
            chain = [
                Hop(e.endpoint, e.model)
                for e in self.chains[Tier(tier)]
                if kinds.get(e.endpoint) in served
            ]
            if chain:
                return chain
        return [Hop(default)] if default is not None else []


def named_hop(model: str | None, api: str, kinds: Mapping[str, str]) -> Hop | None:
    """``local:qwen2.5-coder:7b`` -> endpoint ``local``, model ``qwen2.5-coder:7b``, when
    ``local`` is an endpoint that serves ``api``; None for any other model (``gpt-5``, or
    Ollama's ``qwen2.5-coder:7b``: no endpoint is called ``qwen2.5-coder``)."""
    endpoint, sep, rest = (model or "").partition(":")
    if sep and rest and kinds.get(endpoint) in KINDS_OF_API.get(api, ()):
        return Hop(endpoint, rest)
    return None


def in_order(hops: Sequence[Hop], usable: Callable[[str], bool]) -> list[Hop]:
    """The hops, those whose endpoint is usable (healthy, not backing off) first; the others
    stay in the list, last, for when nothing else answers."""
    good = [h for h in hops if usable(h.endpoint)]
    return good + [h for h in hops if not usable(h.endpoint)]


# --- rewriting the request for another model ---

_GEMINI_MODEL = re.compile(r"(/models/)([^/:]+)(:)")


def rewrite(api: str, path: str, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
    """The request's path and JSON body asking for ``model`` instead (no other change)."""
    if api == "gemini":
        new_path, count = _GEMINI_MODEL.subn(lambda m: m[1] + model + m[3], path, count=1)
        return (new_path if count else path), body
    if "model" in body or api in KINDS_OF_API:
        return path, {**body, "model": model}
    return path, body


def requested_model(api: str, path: str, body: Mapping[str, Any]) -> str | None:
    """The model a request asks for: in its body, or for Gemini in its path."""
    if api == "gemini":
        found = _GEMINI_MODEL.search(path)
        return found[2] if found else None
    model = body.get("model")
    return model if isinstance(model, str) else None


def fallback_message(failed: str, reason: str, to: Hop) -> str:
    """``anthropic is down, using anthropic-2 (claude-sonnet-4-5)``."""
    model = f" ({to.model})" if to.model else ""
    return f"{failed} {reason}, using {to.endpoint}{model}"
