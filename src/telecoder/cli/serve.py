"""``telecoder serve``: the HTTP API, the live dashboard and embedded workers in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Annotated, Any

import typer

from telecoder.masking import mask_logs
from telecoder.settings import Settings


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on [default: 127.0.0.1, or TELECODER_HOST]."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: 7080, or TELECODER_PORT].")
    ] = None,
    workers: Annotated[
        bool,
        typer.Option(
            "--workers/--no-workers",
            help="Run a worker in this process (--no-workers: API and dashboard only).",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API and the dashboard, with embedded workers.

    Without TELECODER_API_TOKEN the server is open to this machine only and refuses any
    address but a loopback one.
    """
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = Settings.load(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    mask_logs(settings, log_file=True)
    # The web stack is imported here: every other command starts without it.
    from telecoder.server.auth import InsecureBind
    from telecoder.server.serve import run_server

    # What the imports built lives as long as the server: out of the collector's sight, a full
    # collection walks only what serving makes (with 1,000 live streams, a pause in every one).
    gc.collect()
    gc.freeze()

    try:
        asyncio.run(run_server(settings, embedded_workers=workers))
    except InsecureBind as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(2) from None
