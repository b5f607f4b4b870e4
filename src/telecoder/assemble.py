"""Build the object graph from settings: the one place the CLI and the server share for it."""

from __future__ import annotations

from telecoder import bestof, private, registry
from telecoder.errors import EngineNotFound
from telecoder.forges.github import GitHubForge
from telecoder.forges.local import LocalForge
from telecoder.gateway import Gateway
from telecoder.pipeline import Pipeline
from telecoder.protocols import Engine, Forge, Runtime
from telecoder.runtimes.docker import DockerRuntime
from telecoder.runtimes.sandbox import SandboxRuntime
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worker import Worker
from telecoder.workspace import Workspace


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
    runtime: Runtime = registry.create("runtimes", settings.runtime)
    if isinstance(runtime, SandboxRuntime):
        runtime.bwrap = settings.sandbox_bwrap
    elif isinstance(runtime, DockerRuntime):
        runtime.configure(settings)
    return runtime


def build_pipeline(settings: Settings, store: Store) -> Pipeline:
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


def build_worker(settings: Settings, store: Store) -> Worker:
    pipeline = build_pipeline(settings, store)
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
    return bestof.Judging(
        settings=settings,
        store=store,
        workspace=pipeline.workspace if pipeline else build_workspace(settings),
        forges=pipeline.forges if pipeline else build_forges(settings),
        owner=settings.worker_id,
    )
