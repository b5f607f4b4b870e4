"""Which engine a task runs when it names none, and whether a named one can run here.

In order: the engine the task names; the repository's ``.telecoder.yml`` ``engine:``; the
operator's default (``TELECODER_DEFAULT_ENGINE``, or ``TELECODER_ENGINE``); the first agent CLI
that is installed and has its key. Otherwise the task is refused with the choices. ``shell``
(the prompt run as a shell command) only ever runs when asked for by name.

Looked up without starting anything: a CLI is found in ``TELECODER_AGENT_PATH`` then ``PATH``;
"configured" means one of its key variables is set (or it needs none).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from telecoder import registry, repoconfig
from telecoder.domain import EngineSource
from telecoder.engines._support import find_binary
from telecoder.errors import BadInput, EngineNotFound, EngineUnavailable
from telecoder.gitcmd import SAFE, git_check, is_url
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worktree import RepoSource

# The order in which installed agents are chosen when nothing names one.
PREFERRED = (
    "claude-code",
    "codex",
    "gemini",
    "opencode",
    "qwen",
    "goose",
    "aider",
    "pi",
    "builtin",
)
# Never chosen unless named: the prompt as a shell command; any ACP agent (needs its command).
ONLY_BY_NAME = frozenset({"shell", "acp"})


@dataclass(frozen=True, slots=True)
class Availability:
    engine: str
    binary: str
    path: str | None  # where the CLI is; None: not installed
    keys: tuple[str, ...]  # its key variables (names only)
    key_set: bool  # one of them is set, or it needs none

    @property
    def installed(self) -> bool:
        return self.path is not None

    @property
    def ready(self) -> bool:
        return self.installed and self.key_set

    def to_dict(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "installed": self.installed,
            "configured": self.key_set,
            "ready": self.ready,
            "keys": list(self.keys),
        }


def environment(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the engines will see of where CLIs are and which keys are set."""
    return {**(os.environ if env is None else env), **settings.engine_control_env()}


@functools.cache
def _facts(name: str) -> tuple[str, tuple[str, ...]]:
    """An engine's CLI and variables: fixed by its class, so looked up once per process (making
    engines from their entry points takes milliseconds each)."""
    engine = registry.create("engines", name)
    return getattr(engine, "binary", None) or name, tuple(getattr(engine, "variables", ()))


def look(name: str, env: Mapping[str, str]) -> Availability:
    binary, variables = _facts(name)
    keys = tuple(v for v in variables if v.endswith(("_KEY", "_TOKEN")))
    # An endpoint that needs no key (OLLAMA_HOST) is enough on its own.
    keyless = tuple(v for v in variables if v not in keys and not v.endswith("_BASE_URL"))
    found = find_binary(binary, env)
    path = found if os.path.isabs(found) and os.access(found, os.X_OK) else None
    key_set = not keys or any(env.get(k) for k in (*keys, *keyless))
    return Availability(engine=name, binary=binary, path=path, keys=keys, key_set=key_set)


def candidates(engines: Collection[str]) -> list[str]:
    """The engines that may be chosen without being named, preferred first."""
    known = set(engines)
    first = [n for n in PREFERRED if n in known]
    return first + sorted(known - set(first) - ONLY_BY_NAME)


def survey(engines: Collection[str], env: Mapping[str, str]) -> list[Availability]:
    """Every engine that may be chosen without a name, as installed and configured here."""
    found = []
    for name in candidates(engines):
        try:
            found.append(look(name, env))
        except Exception:  # a broken plugin is not a choice, and no reason to fail
            continue
    return found


def default_engine(
    settings: Settings, engines: Collection[str], env: Mapping[str, str] | None = None
) -> str | None:
    """The operator's default, else the first installed agent with its key; None: none."""
    if settings.engine:
        return settings.engine
    ready = [a for a in survey(engines, environment(settings, env)) if a.ready]
    return ready[0].engine if ready else None


async def repo_engine(source: RepoSource) -> str | None:
    """The ``engine:`` of the repository's ``.telecoder.yml`` at its checked-out HEAD, when the
    repository is on this host; None otherwise (read again when the session runs)."""
    if source.checkout is not None:
        where: Path = source.checkout
    elif not is_url(source.remote_url):
        where = Path(source.remote_url)
    else:
        return None
    code, text, _ = await git_check(where, *SAFE, "cat-file", "blob", f"HEAD:{repoconfig.FILENAME}")
    if code != 0:
        return None
    try:
        return repoconfig.parse(text).engine
    except BadInput:
        return None  # reported, with its fix, when the session reads it


def choose(
    named: str | None,
    repo: str | None,
    *,
    settings: Settings,
    engines: Collection[str],
    env: Mapping[str, str] | None = None,
) -> tuple[str, EngineSource]:
    """The engine a task runs and where it came from, or ``EngineNotFound`` with the choices."""
    if named:
        return named, EngineSource.REQUEST
    if repo:
        return repo, EngineSource.REPO
    chosen = default_engine(settings, engines, env)
    if chosen:
        return chosen, EngineSource.SETTINGS
    raise EngineNotFound(no_engine(engines, environment(settings, env)))


def no_engine(engines: Collection[str], env: Mapping[str, str]) -> str:
    found = survey(engines, env)
    installed = [a for a in found if a.installed]
    lines = [
        "no engine named and none to choose: give one with --engine NAME "
        f"(choices: {', '.join(candidates(engines))}), set `engine:` in the repository's "
        f"{repoconfig.FILENAME}, or TELECODER_DEFAULT_ENGINE"
    ]
    if installed:
        missing = "; ".join(f"{a.engine} needs {' or '.join(a.keys)}" for a in installed)
        lines.append(f"installed but without a key: {missing}")
    if not any(a.engine != "builtin" for a in installed):
        lines.append(
            "no agent CLI is installed: `make agents` installs the pinned ones into .tools/bin "
            "(then TELECODER_AGENT_PATH=.tools/bin)"
        )
    lines.append("`--engine shell` runs the prompt as a shell command")
    return "; ".join(lines)


def cannot_run(engine: str, env: Mapping[str, str]) -> Availability | None:
    """What ``engine`` lacks on this host (its CLI, or its key); None when it can run, or when
    there is nothing to look up (``shell``, ``acp``, a plugin that cannot be made)."""
    if engine in ONLY_BY_NAME:
        return None
    try:
        found = look(engine, env)
    except Exception:  # a plugin that cannot be made: the worker reports it with its cause
        return None
    return None if found.ready else found


class Fleet:
    """What the store knows beyond this host: engines live workers advertise, and model
    endpoints registered with the gateway (which hands agents their keys)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def live_engines(self) -> set[str]:
        """The engines live workers name (a worker that names none advertises nothing)."""
        return {e for w in await self.store.workers.live() for e in w.engines}

    async def gateway_has_keys(self) -> bool:
        """The gateway is on and some registered endpoint has its key (or needs none)."""
        if not self.settings.gateway:
            return False
        env = os.environ
        return any(not e.key_env or env.get(e.key_env) for e in await self.store.endpoints.list())


async def check_runnable(engine: str, settings: Settings, fleet: Fleet | None) -> None:
    """Refuse (``EngineUnavailable``, with the fix) an engine that cannot run here, unless a
    live worker advertises it; a missing key is no reason when the gateway has endpoints."""
    lacking = cannot_run(engine, environment(settings))
    if lacking is None:
        return
    if fleet is not None and engine in await fleet.live_engines():
        return
    if lacking.installed:
        if fleet is not None and await fleet.gateway_has_keys():
            return
        raise EngineUnavailable(
            f"engine {engine!r} cannot run here: none of {', '.join(lacking.keys)} is set (put "
            "one in the environment or in $TELECODER_HOME/config.env, or register an endpoint "
            "with `telecoder endpoints add`) and no live worker offers it"
        )
    raise EngineUnavailable(
        f"engine {engine!r} cannot run here: its CLI `{lacking.binary}` is not installed "
        "(`make agents` installs the pinned CLIs into .tools/bin; point TELECODER_AGENT_PATH at "
        "that directory) and no live worker offers it"
    )
