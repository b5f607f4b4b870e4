"""``telecoder status``: the installation on one screen — the server (or the local database),
the queue per status, live workers, the sandbox, the model endpoints and the last failures.

With ``--server`` (or ``TELECODER_SERVER``) it asks ``GET /api/status`` (token from
``TELECODER_TOKEN``) and says whether the server answers; otherwise it reads the local store.
Exit 6 when the server or the database cannot be reached, 7 when the server refuses the token.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer

from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.exits import print_json
from telecoder.cli.options import TOKEN_ENV


def status(
    server: ServerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the server, workers, queue depth, sandbox, endpoints and recent failures."""
    settings = load_settings()
    found = run_async(_remote(server) if server else _local(settings))
    if as_json:
        print_json(found)
    else:
        _render(found)


async def _local(settings: Any) -> dict[str, Any]:
    from telecoder import opsstatus
    from telecoder.cli.configfile import url_masked

    async with opened(settings) as store:
        found = await opsstatus.snapshot(store, settings)
    return {"source": "local", "database": url_masked(settings.store_url), **found}


async def _remote(server: str) -> dict[str, Any]:
    from telecoder.client import Client

    started = time.monotonic()
    async with Client(server, token=os.environ.get(TOKEN_ENV) or None) as api:
        body = await api.status()
        return {
            "source": "server",
            "server": {
                "url": api.shown_url,
                "reachable": True,
                "latency_ms": round((time.monotonic() - started) * 1000),
            },
            **body,
        }


def _render(found: dict[str, Any]) -> None:
    say = typer.echo
    if found["source"] == "server":
        s = found["server"]
        say(f"server      {s['url']}: reachable ({s['latency_ms']} ms), version {found['version']}")
    else:
        say(f"database    {found['database']} (local)")
    queue = found["queue"]
    busy = {k: v for k, v in queue.items() if v}
    say("queue       " + (", ".join(f"{k} {v}" for k, v in busy.items()) or "empty"))
    claims = found.get("claims") or {}
    if claims.get("paused"):
        by = f" by {claims['by']}" if claims.get("by") else ""
        say(f"claims      PAUSED{by}: running sessions finish, none start (telecoder resume)")
    w = found["workers"]
    say(f"workers     {w['live']} live, {w['running']}/{w['slots']} slots in use")
    for worker in w["list"]:
        say(f"            {worker['id']} {worker['state']} on {worker['host']}")
    box = found["sandbox"]
    line = f"{box['runtime']}: {box['status']}"
    say(f"sandbox     {line}" + (f" ({box['problem']})" if box["problem"] else ""))
    if found["endpoints"]:
        for e in found["endpoints"]:
            health = {True: "healthy", False: "unhealthy", None: "unchecked"}[e["healthy"]]
            say(f"endpoint    {e['name']} ({e['kind']}): {health}")
    else:
        say("endpoints   none")
    failures = found["recent_failures"]
    say("failures    " + ("none" if not failures else f"the last {len(failures)}:"))
    for f in failures:
        say(f"            {f['id']} {f['failure_kind'] or 'failed'}: {f['reason'] or '-'}")
