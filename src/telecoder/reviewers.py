"""Who reviews: a panel of reviewers, each an engine and maybe a model.

One rule for a council (``telecoder council``) and a review stage (``.telecoder.yml``
``review: council``): ``TELECODER_COUNCIL_REVIEWERS`` (each ``ENGINE`` or ``ENGINE:MODEL``),
else three different engines whose CLIs are installed (in ``PREFERRED`` order), else the
session's engine three times. A review stage that names one engine has a panel of one.

Each reviewer has a ``name`` unique in its panel (the tally keys answers by it): the spec as
written, with ``#2``, ``#3`` added to repeats (``claude-code``, ``claude-code#2``, …).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from telecoder import registry
from telecoder.engines._support import find_binary
from telecoder.errors import BadInput
from telecoder.settings import Settings

COUNCIL = "council"
SIZE = 3  # reviewers of a default council
# Agent CLIs a default council picks from, in this order; engines without a model of their own
# to ask (``shell``) or without a CLI to find (``builtin``, ``acp``) are never picked.
PREFERRED = ("claude-code", "codex", "gemini", "opencode", "qwen", "pi", "goose", "aider")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reviewer:
    name: str  # unique in its panel
    engine: str
    model: str | None = None


def spec(text: str) -> tuple[str, str | None]:
    """``ENGINE`` or ``ENGINE:MODEL`` as (engine, model)."""
    engine, _, model = text.strip().partition(":")
    if not engine:
        raise BadInput(f"a reviewer is ENGINE or ENGINE:MODEL, not {text!r}")
    return engine, model.strip() or None


def panel(specs: Sequence[str]) -> list[Reviewer]:
    """The reviewers ``specs`` name, each with a name unique in the panel."""
    reviewers: list[Reviewer] = []
    seen: dict[str, int] = {}
    for text in specs:
        engine, model = spec(text)
        label = f"{engine}:{model}" if model else engine
        seen[label] = seen.get(label, 0) + 1
        name = label if seen[label] == 1 else f"{label}#{seen[label]}"
        reviewers.append(Reviewer(name=name, engine=engine, model=model))
    return reviewers


def installed(settings: Settings) -> list[str]:
    """The engines of ``PREFERRED`` whose CLI is found (``TELECODER_AGENT_PATH``, then
    ``PATH``), in that order."""
    env = {**os.environ, **settings.engine_control_env()}
    if settings.agent_path:
        env["TELECODER_AGENT_PATH"] = settings.agent_path
    known = set(registry.names("engines"))
    found = []
    for name in PREFERRED:
        if name not in known:
            continue
        binary = getattr(registry.create("engines", name), "binary", None) or name
        if os.path.isabs(find_binary(binary, env)):
            found.append(name)
    return found


def council(
    settings: Settings,
    engine: str,
    *,
    available: Callable[[Settings], Sequence[str]] = installed,
) -> list[Reviewer]:
    """A council's reviewers: the setting's, else three different installed engines, else
    ``engine`` (the session's) three times."""
    if settings.council_reviewers:
        return panel(settings.council_reviewers)
    found = list(available(settings))
    if len(found) >= SIZE:
        return panel(found[:SIZE])
    return panel([engine] * SIZE)


def of_stage(setting: str, settings: Settings, engine: str) -> list[Reviewer]:
    """A review stage's panel: ``council``, or the one reviewer ``setting`` names."""
    if setting == COUNCIL:
        return council(settings, engine)
    return panel([setting])
