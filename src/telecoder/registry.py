"""Name -> implementation for engines, runtimes and forges.

Built-ins register exactly as third-party plugins do: through the entry-point groups
``telecoder.engines``, ``telecoder.runtimes`` and ``telecoder.forges`` (see pyproject.toml);
``telecoder.subscribers`` names in-process subscribers to session events.
An entry point names a class (or any callable) that takes no arguments; it is imported only
when asked for. ``register`` adds one at run time (tests, embedding applications).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from telecoder.errors import EngineNotFound, PluginNotFound

Family = Literal["engines", "runtimes", "forges", "subscribers"]

_extra: dict[Family, dict[str, Callable[[], Any]]] = {
    "engines": {},
    "runtimes": {},
    "forges": {},
    "subscribers": {},  # each makes a callable that is given session events (telecoder.deliverer)
}


def register(family: Family, name: str, factory: Callable[[], Any]) -> Callable[[], None]:
    """Add an implementation; returns a function that removes it again."""
    _extra[family][name] = factory

    def unregister() -> None:
        _extra[family].pop(name, None)

    return unregister


def names(family: Family) -> list[str]:
    return sorted(_installed(family) | set(_extra[family]))


@cache
def _installed(family: Family) -> frozenset[str]:
    """The entry points' names, read once a process: reading them scans every installed
    distribution's metadata (~10 ms here), and the server's intake asks on each submission.
    A plugin installed later is seen after a restart, as its code would be."""
    return frozenset(ep.name for ep in entry_points(group=f"telecoder.{family}"))


def create(family: Family, name: str) -> Any:
    """A new instance of the implementation called ``name``."""
    factory = _extra[family].get(name)
    if factory is None:
        matches = entry_points(group=f"telecoder.{family}", name=name)
        if not matches:
            known = ", ".join(names(family)) or "none"
            error = EngineNotFound if family == "engines" else PluginNotFound
            raise error(f"unknown {family[:-1]} {name!r} (known: {known})")
        factory = next(iter(matches)).load()
    return factory()
