"""``telecoder worker``: run queued sessions until stopped."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from telecoder.assemble import build_worker
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.jobs import cli_intake
from telecoder.cli.output import err
from telecoder.deliverer import Deliverer, load_subscribers, policy_of
from telecoder.scheduler import Scheduler


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Sessions run at once (TELECODER_WORKER_CONCURRENCY).", min=1)
    ] = None,
) -> None:
    """Run queued sessions. SIGINT or SIGTERM hands running sessions back and exits.

    It claims only sessions of the engines in TELECODER_WORKER_ENGINES (default: all).
    """
    overrides = {"worker_concurrency": concurrency} if concurrency else {}
    settings = load_settings().model_copy(update=overrides)

    async def go() -> None:
        async with opened(settings) as store:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
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
