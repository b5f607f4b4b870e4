"""Build the object graph from settings: the one place the CLI and the server share for it.

What runs sessions (the pipeline, the gateway, the runtimes, best-of-N's judge) is imported by
the functions that build it: `telecoder run --detach` needs only the workspace and the forges.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from telecoder import private, registry
from telecoder.engines._support import find_binary
from telecoder.errors import EngineNotFound
from telecoder.forges.github import GitHubForge
from telecoder.forges.local import LocalForge
from telecoder.protocols import Engine, Forge, Runtime
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.workspace import Workspace

if TYPE_CHECKING:
    from telecoder import bestof, upkeep
    from telecoder.pipeline import Pipeline
    from telecoder.worker import Worker


def build_workspace(settings: Settings) -> Workspace:
    return Workspace(
        mirrors=settings.mirrors,
        worktrees=settings.worktrees,
        author_name=settings.git_author_name,
        author_email=settings.git_author_email,
        pool_size=settings.worktree_pool,
    )


def build_forges(settings: Settings) -> dict[str, Forge]:
    # "local" last: auto selection asks the others first.
    return {"github": GitHubForge.from_settings(settings), "local": LocalForge()}


def engine(name: str) -> Engine:
    engine: Engine = registry.create("engines", name)
    return engine


def build_runtime(settings: Settings) -> Runtime:
    """The runtime ``settings`` name, given its settings."""
    from telecoder.runtimes.docker import DockerRuntime
    from telecoder.runtimes.sandbox import SandboxRuntime

    runtime: Runtime = registry.create("runtimes", settings.runtime)
    if isinstance(runtime, SandboxRuntime):
        runtime.bwrap = settings.sandbox_bwrap
    elif isinstance(runtime, DockerRuntime):
        runtime.configure(settings)
    return runtime


def build_pipeline(settings: Settings, store: Store, *, one_shot: bool = False) -> Pipeline:
    from telecoder.gateway import Gateway
    from telecoder.pipeline import Pipeline

    runtime = build_runtime(settings)
    private.make_dir(settings.engine_homes)  # prompts, agents' state and keys: ours alone
    return Pipeline(
        settings=settings,
        store=store,
        workspace=build_workspace(settings),
        engines=engine,
        runtime=runtime,
        forges=build_forges(settings),
        gateway=Gateway.from_settings(settings, store) if settings.gateway else None,
        one_shot=one_shot,
    )


def worker_engines(settings: Settings) -> list[str]:
    """The engines a worker advertises and claims: ``TELECODER_WORKER_ENGINES``, or all."""
    known = registry.names("engines")
    if not settings.worker_engines:
        return known
    unknown = sorted(set(settings.worker_engines) - set(known))
    if unknown:
        raise EngineNotFound(
            f"TELECODER_WORKER_ENGINES names unknown engines {', '.join(unknown)} "
            f"(known: {', '.join(known)})"
        )
    return sorted(set(settings.worker_engines))


def installed_engines(env: Mapping[str, str]) -> list[str]:
    """The engines whose agent CLI this host has (for ``acp``: any of its agents), looked up
    as a session would start it: what a remote worker advertises and claims by default."""
    found = []
    for name in registry.names("engines"):
        engine = registry.create("engines", name)
        agents: Mapping[str, tuple[str, tuple[str, ...]]] | None = getattr(engine, "agents", None)
        binaries = [b for b, _ in agents.values()] if agents else [getattr(engine, "binary", name)]
        if any(os.path.isabs(find_binary(b, env)) for b in binaries):
            found.append(name)
    return found


def build_worker(settings: Settings, store: Store, *, one_shot: bool = False) -> Worker:
    """``one_shot``: for a command that runs its sessions here and exits (`telecoder run`),
    not a worker process: it loads no embedding model just to store a memory's vector."""
    from telecoder.worker import Worker

    pipeline = build_pipeline(settings, store, one_shot=one_shot)
    return Worker(
        settings=settings,
        store=store,
        pipeline=pipeline,
        engines=worker_engines(settings),
        after=build_judging(settings, store, pipeline),
        side=pipeline.workspace.pool,  # the warm pool, refilled in the background
    )


def build_judging(
    settings: Settings, store: Store, pipeline: Pipeline | None = None
) -> bestof.Judging:
    """The judge of best-of-N runs, with the pipeline's workspace and forges when given."""
    from telecoder import bestof

    return bestof.Judging(
        settings=settings,
        store=store,
        workspace=pipeline.workspace if pipeline else build_workspace(settings),
        forges=pipeline.forges if pipeline else build_forges(settings),
        owner=settings.worker_id,
    )


def build_upkeep(settings: Settings, store: Store) -> upkeep.Upkeep:
    """What a server does itself for the sessions remote workers run (``upkeep``)."""
    from telecoder import upkeep
    from telecoder.remembering import Remembering

    workspace = build_workspace(settings)
    return upkeep.Upkeep(
        settings=settings,
        store=store,
        judging=build_judging(settings, store),
        remembering=Remembering(settings=settings, store=store, workspace=workspace),
    )
