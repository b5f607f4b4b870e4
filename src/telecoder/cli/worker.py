"""``telecoder worker``: run queued sessions until stopped — from the database, or from a
server's API with ``--server URL`` (a worker token in ``TELECODER_TOKEN``, no database)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Annotated

import typer

from telecoder.assemble import build_pipeline, build_worker, installed_engines, worker_engines
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.jobs import cli_intake
from telecoder.cli.options import TOKEN_ENV, ServerOption
from telecoder.cli.output import err
from telecoder.deliverer import Deliverer, load_subscribers, policy_of
from telecoder.scheduler import Scheduler
from telecoder.settings import Settings

SCRATCH = "worker-scratch.db"  # a remote worker's private store, under TELECODER_HOME


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Sessions run at once (TELECODER_WORKER_CONCURRENCY).", min=1)
    ] = None,
    server: ServerOption = None,
) -> None:
    """Run queued sessions. SIGINT or SIGTERM hands running sessions back and exits.

    It claims only sessions of the engines in TELECODER_WORKER_ENGINES (default: all). With
    --server it runs the sessions of that server through its API (a worker token in
    TELECODER_TOKEN: `telecoder tokens create --role worker`); no database is needed, and by
    default it claims the engines whose CLI this host has installed.
    """
    overrides = {"worker_concurrency": concurrency} if concurrency else {}
    settings = load_settings(log_file=True).model_copy(update=overrides)
    if server:
        run_async(_remote(settings, server))
        return

    async def go() -> None:
        async with opened(settings) as store:
            stop = _stop_on_signals()
            worker = build_worker(settings, store)
            err.print(
                f"worker {worker.id}: {settings.worker_concurrency} slots, "
                f"engines {', '.join(worker.engines or ['any'])}, "
                f"database {settings.store_url.split('@')[-1]}"
            )
            # Notifications out are sent from every worker and server (rows are leased).
            deliverer = Deliverer(store, policy=policy_of(settings), subscribers=load_subscribers())
            sending = asyncio.create_task(deliverer.run(stop), name="deliverer")
            # Cron jobs are fired by every worker and server (one firing per slot).
            scheduler = Scheduler(store, settings, cli_intake(settings))
            scheduling = asyncio.create_task(scheduler.run(stop), name="scheduler")
            try:
                await worker.run(stop)
            finally:
                stop.set()
                await sending
                await scheduling

    run_async(go())


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _remote(settings: Settings, server: str) -> None:
    """Run the server's sessions here: the pipeline on a scratch store of this host's own."""
    from telecoder.remote_state import attach
    from telecoder.remote_worker import RemoteWorker
    from telecoder.workerclient import WorkerClient

    if settings.database_url:
        err.print("[yellow]warning:[/] --server: TELECODER_DATABASE_URL is not used")
    # Its own store, whatever the database settings say: the server's database is not ours.
    update: dict[str, object] = {"database_url": f"sqlite:///{settings.home / SCRATCH}"}
    if "worker_id" not in settings.model_fields_set:
        # The same id across restarts: its worker token is bound to it.
        update["worker_id"] = socket.gethostname()
    scratch = settings.model_copy(update=update)
    # The engines it names, or those whose CLI this host has installed.
    engines = worker_engines(settings) if settings.worker_engines else installed_engines(os.environ)
    api = WorkerClient(server, token=os.environ.get(TOKEN_ENV) or None)
    async with api, opened(scratch) as store:
        stop = _stop_on_signals()
        pipeline = build_pipeline(scratch, store)
        attach(pipeline.remembering, store, api)  # its memories are the server's
        worker = RemoteWorker(
            settings=scratch,
            api=api,
            scratch=store,
            pipeline=pipeline,
            engines=engines,
            side=pipeline.workspace.pool,  # the warm pool, refilled in the background
        )
        err.print(
            f"worker {worker.id}: {settings.worker_concurrency} slots, "
            f"engines {', '.join(engines)}, server {api.shown_url}"
        )
        await worker.run(stop)
