"""``telecoder serve``: the HTTP API, the live dashboard and embedded workers in one process."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Annotated, Any

import typer
import uvicorn

from telecoder.assemble import build_worker
from telecoder.bus import Bus
from telecoder.server import create_app
from telecoder.server.auth import InsecureBind, Tokens, check_bind
from telecoder.server.state import WorkerRunner
from telecoder.settings import Settings
from telecoder.store import Store, open_store

GRACEFUL_SECONDS = 10.0


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
    try:
        asyncio.run(run_server(settings, embedded_workers=workers))
    except InsecureBind as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(2) from None


def workers_for(settings: Settings, store: Store) -> WorkerRunner:
    """The embedded worker's ``run``: the same worker ``telecoder worker`` runs."""
    return build_worker(settings, store).run


async def run_server(
    settings: Settings,
    *,
    embedded_workers: bool = True,
    sock: socket.socket | None = None,
) -> None:
    """Run until SIGINT/SIGTERM; ``sock`` is an already bound socket (tests, benchmarks)."""
    secret = settings.api_token.get_secret_value() if settings.api_token else None
    check_bind(Tokens.parse(secret), settings.host)  # before the store creates anything
    store = await open_store(settings.store_url, lease_seconds=settings.lease_seconds)
    try:
        runner = workers_for(settings, store) if embedded_workers else None
        app = create_app(settings, store, start_workers=runner)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
            log_level="info",
            access_log=False,
        )
        server = _Server(config, bus=app.state.telecoder.bus)
        await server.serve(sockets=[sock] if sock is not None else None)
    finally:
        await store.close()


class _Server(uvicorn.Server):
    """Ends live streams first at shutdown: they never finish by themselves."""

    def __init__(self, config: uvicorn.Config, *, bus: Bus) -> None:
        super().__init__(config)
        self._bus = bus

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._bus.close()
        await super().shutdown(sockets)
