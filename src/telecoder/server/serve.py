"""Running the server: the app, uvicorn and the embedded worker, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import socket

import uvicorn

from telecoder.assemble import build_worker
from telecoder.bus import Bus
from telecoder.masking import mask_logs
from telecoder.server.app import create_app
from telecoder.server.auth import Tokens, check_bind
from telecoder.server.state import WorkerRunner
from telecoder.settings import Settings
from telecoder.store import Store, open_store, store_options

GRACEFUL_SECONDS = 10.0

log = logging.getLogger(__name__)


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
    store = await open_store(settings.store_url, **store_options(settings))
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
        # After uvicorn configured its loggers: their handlers too (and the log file).
        mask_logs(settings, log_file=True)
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
        bus = self._bus
        if bus.written.count:
            log.info(
                "live streams: append -> fanned out %s; append -> written %s",
                bus.fanned.summary(),
                bus.written.summary(),
            )
        await bus.close()
        await super().shutdown(sockets)
