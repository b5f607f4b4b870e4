"""``telecoder engines``: which agent CLIs are installed, at which version, and configured.

Looked up now, every time (nothing is cached): the CLI is searched in ``TELECODER_AGENT_PATH``
then ``PATH``; its version is what ``CLI --version`` prints within a few seconds (run with an
empty home of its own, stdin from /dev/null, in its own process group). Of the endpoint and key
variables only the names are shown, and whether each is set: never a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from telecoder import registry
from telecoder.cli.common import load_settings, run_async
from telecoder.cli.output import out, print_json
from telecoder.engines._support import find_binary

VERSION_TIMEOUT = 10.0
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:[-+.][0-9A-Za-z.]+)?")


@dataclass(frozen=True, slots=True)
class Row:
    engine: str
    agent: str | None  # the ACP agent, for ``acp``
    cli: str
    path: str | None
    version: str | None
    variables: dict[str, bool]  # name -> set (never the value)

    @property
    def configured(self) -> bool:
        """A key is set (or the engine needs none)."""
        keys = [n for n in self.variables if n.endswith(("_KEY", "_TOKEN"))]
        return not keys or any(self.variables[n] for n in keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "agent": self.agent,
            "cli": self.cli,
            "installed": self.path is not None,
            "path": self.path,
            "version": self.version,
            "variables": self.variables,
            "configured": self.configured,
        }


def engines(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the engines: CLI installed and its version, endpoint/key variables set."""
    settings = load_settings()
    env = {**os.environ, **settings.engine_control_env()}
    rows = run_async(_rows(env))
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ENGINE", "CLI", "VERSION", "KEY", "VARIABLES"):
        table.add_column(column)
    for r in rows:
        name = f"{r.engine} ({r.agent})" if r.agent else r.engine
        version = r.version or ("installed" if r.path else "[red]not installed[/]")
        variables = " ".join(
            f"{n} {'[green]set[/]' if is_set else '[dim]unset[/]'}"
            for n, is_set in r.variables.items()
        )
        key = "[green]set[/]" if r.configured else "[yellow]not set[/]"
        table.add_row(name, r.cli, version, key, variables or "[dim]none needed[/]")
    out.print(table)


async def _rows(env: Mapping[str, str]) -> list[Row]:
    wanted: list[tuple[str, str | None, str, tuple[str, ...]]] = []
    for name in registry.names("engines"):
        engine = registry.create("engines", name)
        agents: Mapping[str, tuple[str, tuple[str, ...]]] | None = getattr(engine, "agents", None)
        if agents:
            for agent, (binary, variables) in agents.items():
                wanted.append((name, agent, binary, variables))
        else:
            binary = getattr(engine, "binary", None) or name
            wanted.append((name, None, binary, tuple(getattr(engine, "variables", ()))))
    # As many probes at once as there are cores: a dozen Node CLIs starting together on a small
    # machine would each take longer than VERSION_TIMEOUT, which counts from a probe's start.
    probes = asyncio.Semaphore(os.cpu_count() or 2)
    with tempfile.TemporaryDirectory(prefix="telecoder-engines-") as home:
        found = await asyncio.gather(
            *(_look(binary, env, home, probes) for _, _, binary, _ in wanted)
        )
    return [
        Row(
            engine=name,
            agent=agent,
            cli=binary,
            path=path,
            version=version,
            variables={v: bool(env.get(v)) for v in variables},
        )
        for (name, agent, binary, variables), (path, version) in zip(wanted, found, strict=True)
    ]


async def _look(
    binary: str, env: Mapping[str, str], home: str, probes: asyncio.Semaphore
) -> tuple[str | None, str | None]:
    path = find_binary(binary, env)
    if not os.path.isabs(path):
        return None, None
    async with probes:
        return path, await _version(path, env, home)


async def _version(path: str, env: Mapping[str, str], home: str) -> str | None:
    """What ``path --version`` says, or None if it says nothing recognisable in time."""
    bare = {k: env[k] for k in ("PATH", "LANG", "LC_ALL") if k in env}
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**bare, "HOME": home, "NO_COLOR": "1"},
            cwd=home,
            start_new_session=True,
        )
    except OSError:
        return None
    try:
        printed, _ = await asyncio.wait_for(proc.communicate(), VERSION_TIMEOUT)
    except TimeoutError:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != 0:
        return None
    found = _VERSION.search(printed.decode("utf-8", "replace"))
    return found.group(0) if found else None
