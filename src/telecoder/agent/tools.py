"""The five tools, confined to the worktree; each call ends in an ``Observation``.

A model's mistake (a path outside the worktree, a missing file, bad arguments, a command that
times out) is an observation with ``ok: false`` and an ``error`` saying what to do instead,
never an exception: the loop sends it back to the model and goes on.

CONTRACT (shared by the ``agent-tools`` and ``builtin`` branches; change it only together).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMES = ("read_file", "write_file", "list_directory", "run_command", "search_files")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    id: str  # the model's call id (native calls), or one made up for a call parsed from text
    name: str
    arguments: Mapping[str, Any]

    def key(self) -> str:
        """The same tool with the same arguments gives the same key (repeated-call detection)."""
        return self.name + ":" + json.dumps(dict(self.arguments), sort_keys=True, default=str)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    tool: str
    ok: bool
    data: Mapping[str, Any] = field(default_factory=dict)  # e.g. content, entries, exit_code
    error: str | None = None  # what went wrong, addressed to the model

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "ok": self.ok, **self.data, "error": self.error}

    def to_json(self) -> str:
        """What the model is sent."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    command_timeout: float = 120.0  # seconds a run_command may take (its process group killed)
    output_cap: int = 30_000  # characters of any observation's text (head and tail kept)
    read_cap: int = 200_000  # bytes read_file reads at most


class Tools:
    """The tools over one worktree (``root``)."""

    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.root = root.resolve()
        self.limits = limits or Limits()

    def run(self, call: ToolCall) -> Observation:
        """Run one call; never raises for anything the model did."""
        raise NotImplementedError


def schemas() -> list[dict[str, Any]]:
    """The five tools as OpenAI ``tools`` entries (``{"type": "function", "function": ...}``)."""
    raise NotImplementedError
