"""The sandbox's settings (README, "Security model"): the runtime, its limits, the network."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

# Package registries of the common ecosystems: where setup commands may reach by default.
DEFAULT_REGISTRIES = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "proxy.golang.org",
    "sum.golang.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "rubygems.org",
    "repo.maven.apache.org",
    "repo1.maven.org",
    "plugins.gradle.org",
    "services.gradle.org",
    "api.nuget.org",
    "repo.packagist.org",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
)

NetworkSetting = Literal["none", "model", "allowlist", "open"]


def _bytes(value: Any) -> Any:
    """``512m``, ``4g``, ``1073741824`` -> bytes; empty or ``0``: no limit."""
    if value is None or isinstance(value, int):
        return value or None
    text = str(value).strip().lower()
    if not text or text in ("0", "none", "off"):
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    factor = units.get(text[-1], 1)
    number = text[:-1] if text[-1] in units else text
    try:
        return int(float(number.removesuffix("i").removesuffix("b")) * factor)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (e.g. 512m, 4g)") from None


def _cache_size(value: Any) -> Any:
    """A size like ``_bytes``, where ``0`` (or empty) turns the cache off."""
    return _bytes(value) or 0


class SandboxSettings(BaseModel):
    runtime: str = Field(
        default="sandbox" if sys.platform == "linux" else "local",
        description="Where agents run: sandbox (bubblewrap, the default on Linux), docker, "
        "local (no isolation: unsafe).",
    )
    sandbox_bwrap: str = Field(
        default="bwrap", description="The bubblewrap program the sandbox runtime runs."
    )
    sandbox_memory: Annotated[int | None, BeforeValidator(_bytes)] = Field(
        default=4 << 30, description="Memory of one sandbox (e.g. 4g; 0: no limit)."
    )
    sandbox_pids: int | None = Field(
        default=1024, ge=0, description="Processes in one sandbox at once (0: no limit)."
    )
    sandbox_file_size: Annotated[int | None, BeforeValidator(_bytes)] = Field(
        default=2 << 30, description="Largest file a sandboxed process may write (0: no limit)."
    )
    worktree_max_bytes: Annotated[int | None, BeforeValidator(_bytes)] = Field(
        default=10 << 30,
        description="What a worktree may hold while its agent runs (e.g. 10g; 0: no cap).",
    )
    cache_max: Annotated[int, BeforeValidator(_cache_size)] = Field(
        default=10 << 30,
        description="Total size of the setup cache (e.g. 10G, 500M; 0: no setup cache).",
    )
    sandbox_read: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="More directories a sandbox may read (comma-separated), e.g. a toolchain.",
    )
    docker_image: str | None = Field(
        default=None,
        description="The image of the docker runtime (your toolchains; needs python3 for a "
        "network policy other than none).",
    )
    docker_host: str = Field(
        default="unix:///var/run/docker.sock",
        validation_alias=AliasChoices("TELECODER_DOCKER_HOST", "DOCKER_HOST"),
        description="The Docker Engine API of the docker runtime: unix:///path or tcp://host:port.",
    )
    docker_env: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Host environment variables the docker runtime passes into its containers "
        "(comma-separated names), e.g. a service CLI's token.",
    )
    network_policy: NetworkSetting = Field(
        default="model", description="The agent's network: none, model, allowlist, open."
    )
    setup_network_policy: NetworkSetting = Field(
        default="allowlist", description="Network of .telecoder.yml setup commands."
    )
    verify_network_policy: NetworkSetting = Field(
        default="none", description="Network of .telecoder.yml verify commands and checks."
    )
    network_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Hosts reachable under the allowlist policy (comma-separated: host, "
        "*.domain, host:port), added to the repository's `network.allow`.",
    )
    network_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Names the egress proxy resolves itself (comma-separated name=address), "
        "e.g. a model endpoint on a private name.",
    )
    network_registries: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_REGISTRIES,
        description="Package registries setup commands may reach (comma-separated).",
    )
    model_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(
            "api.anthropic.com:443",
            "api.openai.com:443",
            "generativelanguage.googleapis.com:443",
        ),
        description="Model endpoints agents may reach besides the *_BASE_URL they are given "
        "(with the gateway on, none: agents reach models only through it).",
    )
