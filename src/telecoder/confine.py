"""What a session's processes may see and reach: the ``Confinement`` of its agent, its setup
commands and its checks (ARCHITECTURE §3, "engine.start in runtime").

All three see the same files: the worktree and the session's engine home read-write (the
worktree and the git dir read-only for a read-only session, a council's reviewer); the
session's own git dir in place of the worktree's admin dir (``Workspace.sandbox_git_dir``) and
the mirror's objects read-only; the tool directories (``PATH``, ``TELECODER_AGENT_PATH``,
``TELECODER_SANDBOX_READ``, this Python, TeleCoder's package) read-only. ``$TELECODER_HOME``,
the worktrees and the operator's home stay hidden. They differ in network: the agent gets
``network_policy`` (model by default), setup commands ``setup_network_policy`` (allowlist:
package registries), checks ``verify_network_policy`` (none); ``.telecoder.yml`` ``network:``
overrides each and adds hosts.

A reviewer (``review``, ``telecoder.review``) reads the same worktree and git dir READ-ONLY, with
a home of its own instead of the agent's, and the agent's network policy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from telecoder.protocols import Confinement, Endpoint, Mount, NetworkMode, NetworkPolicy
from telecoder.repoconfig import RepoConfig
from telecoder.runtimes.sandbox import tool_dirs
from telecoder.settings import Settings
from telecoder.workspace import Worktree

Role = Literal["agent", "setup", "verify", "review"]
_DEFAULT_PORTS = {"http": 80, "https": 443}
PACKAGE = Path(__file__).resolve().parent  # mounted at the same path, so it imports inside


def model_endpoints(env: Mapping[str, str], extra: Sequence[str] = ()) -> tuple[Endpoint, ...]:
    """The endpoints an engine's model variables name (``*_BASE_URL``, ``OLLAMA_HOST``), and
    ``extra`` (``host:port``)."""
    found: list[Endpoint] = []
    for name, value in env.items():
        if not value or not (name.endswith("_BASE_URL") or name == "OLLAMA_HOST"):
            continue
        url = urlsplit(value if "://" in value else f"http://{value}")
        try:
            port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        except ValueError:
            continue
        if url.hostname:
            found.append(Endpoint(host=url.hostname, port=port))
    for item in extra:
        host, _, number = item.rpartition(":")
        if host and number.isdigit():
            found.append(Endpoint(host=host, port=int(number)))
    return tuple(dict.fromkeys(found))


class Confiner:
    """Builds the confinements of one attempt."""

    def __init__(
        self,
        settings: Settings,
        *,
        label: str,
        worktree: Worktree,
        home: Path,
        git_dir: Path | None,
        config: RepoConfig,
        model_env: Mapping[str, str],
        on_denied: Callable[[Role, Endpoint, str], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.settings = settings
        self.label = label
        self.worktree = worktree
        self.home = home
        self.git_dir = git_dir
        self.config = config
        # With the gateway on, the variables name only the gateway: the one model endpoint.
        extra = () if settings.gateway else settings.model_hosts
        self.endpoints = model_endpoints(model_env, extra)
        self.on_denied = on_denied
        self.read_only = read_only  # the worktree and the git dir mounted read-only

    def for_role(self, role: Role, *, home: Path | None = None) -> Confinement:
        """``home``: a reviewer's own (``review``), in place of the session's engine home."""
        s = self.settings
        network = self.config.network
        mode: NetworkMode = {
            "agent": network.policy or s.network_policy,
            "review": network.policy or s.network_policy,
            "setup": network.setup or s.setup_network_policy,
            "verify": network.verify or s.verify_network_policy,
        }[role]
        allow = [*s.network_allow, *network.allow]
        if role == "setup":
            allow += s.network_registries
        policy = NetworkPolicy(
            mode=mode,
            endpoints=self.endpoints if mode != "none" else (),
            allow=tuple(dict.fromkeys(allow)) if mode in ("allowlist", "open") else (),
            hosts=tuple(
                (name.strip(), address.strip())
                for name, _, address in (item.partition("=") for item in s.network_hosts)
                if name.strip() and address.strip()
            ),
        )
        on_denied = None
        if self.on_denied is not None:
            report = self.on_denied

            def on_denied(endpoint: Endpoint, reason: str) -> None:
                report(role, endpoint, reason)

        return Confinement(
            label=self.label,
            mounts=self._mounts(read_only=role == "review", home=home),
            hidden=self._hidden(),
            network=policy,
            memory_bytes=s.sandbox_memory,
            pids=s.sandbox_pids_limit,
            file_bytes=s.sandbox_file_size,
            on_denied=on_denied,
        )

    def _mounts(self, *, read_only: bool = False, home: Path | None = None) -> tuple[Mount, ...]:
        s = self.settings
        agent_path = [p for p in (s.agent_path or "").split(os.pathsep) if p]
        readable = tool_dirs(os.environ.get("PATH", ""), agent_path)
        readable += [(Path(p), Path(p)) for p in s.sandbox_read if Path(p).is_absolute()]
        for prefix in {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}:
            if not str(prefix).startswith(("/usr", "/bin", "/lib")):
                readable.append((prefix, prefix))  # this Python: tools made with it link into it
        # TeleCoder's own package, where it is installed (an editable install's ``src``): the
        # builtin engine's agent runs ``python -m telecoder.agent`` inside. Code only, no secret.
        readable.append((PACKAGE, PACKAGE))
        mounts = [
            Mount(source=source, target=target)
            for source, target in dict.fromkeys(readable)
            if source.is_dir()
        ]
        wt = self.worktree
        home = home or self.home
        home.mkdir(parents=True, exist_ok=True)
        # Read-only (a reviewer, a read-only session): still given to the sandbox's uid, which
        # must read them (a fresh worktree is private to TeleCoder).
        writable = not (read_only or self.read_only)
        mounts += [
            Mount(source=wt.path, target=wt.path, writable=writable, owned=True),
            Mount(source=home, target=home, writable=True),
        ]
        if self.git_dir is not None:
            mounts += [
                Mount(source=self.git_dir, target=wt.git_dir, writable=writable, owned=True),
                Mount(source=wt.mirror / "objects", target=wt.mirror / "objects"),
            ]
        return tuple(mounts)

    def _hidden(self) -> tuple[Path, ...]:
        s = self.settings
        places = [s.home, s.worktrees, s.mirrors, s.engine_homes, s.raw_logs, s.setup_cache_dir]
        places.append(Path.home())
        return tuple(dict.fromkeys(p.resolve() for p in places))
