"""``$TELECODER_HOME/config.env``: the model keys it holds put in the environment, and paths
written in it made absolute."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from telecoder.settings import Settings


def export_engine_keys(env_file: Path, names: tuple[str, ...]) -> list[str]:
    """Put the model endpoints and keys of ``config.env`` (``TELECODER_ENGINE_ENV``'s names:
    ANTHROPIC_API_KEY, OPENAI_API_KEY, …) into this process's environment, where the gateway
    and the engines read them; the environment wins. Returns the names it set."""
    from dotenv import dotenv_values

    found = dotenv_values(env_file)
    done = []
    for name in names:
        value = found.get(name)
        if value and not os.environ.get(name):
            os.environ[name] = value
            done.append(name)
    return done


def absolute_path_list(value: str, base: Path) -> str:
    """A colon-separated list of directories, each made absolute against ``base``."""
    parts = [p for p in value.split(os.pathsep) if p]
    return os.pathsep.join(os.path.normpath(base / Path(p).expanduser()) for p in parts)


def agent_path_of_file(settings: Settings, env_file: Path, overrides: dict[str, Any]) -> Settings:
    """A relative ``TELECODER_AGENT_PATH`` written in ``config.env`` is relative to that file."""
    from dotenv import dotenv_values

    if "agent_path" in overrides or os.environ.get("TELECODER_AGENT_PATH"):
        return settings
    raw = dotenv_values(env_file).get("TELECODER_AGENT_PATH")
    if not raw:
        return settings
    fixed = absolute_path_list(raw, env_file.parent)
    return settings.model_copy(update={"agent_path": fixed})
