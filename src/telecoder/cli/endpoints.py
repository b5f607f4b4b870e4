"""``telecoder endpoints``: the model endpoints the gateway forwards to — add, list, check, remove.

Locally they read and write the database (and check from this machine, with the keys of this
environment); with ``--server`` they ask a TeleCoder server, which checks with its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import Exit, age, err, out, print_json
from telecoder.errors import BadInput, EndpointNotFound
from telecoder.gateway.endpoints import (
    ENV_NAMES,
    KINDS,
    Endpoint,
    check_and_record,
    env_specs,
    find,
    listing,
    validate,
)
from telecoder.store import EndpointRow

app = typer.Typer(
    help="Model endpoints the gateway forwards to: add, list, check, remove.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name for it (lowercase), e.g. anthropic-2.")],
    url: Annotated[str, typer.Argument(help="Its base URL, e.g. https://api.anthropic.com.")],
    kind: Annotated[str, typer.Option("--kind", help=f"The API it speaks: {', '.join(KINDS)}.")],
    key_env: Annotated[
        str | None,
        typer.Option(
            "--key-env",
            help="The variable of the gateway's environment holding its key (the key itself "
            "is never stored).",
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Register a model endpoint (`telecoder endpoints add NAME URL --kind K [--key-env VAR]`)."""
    spec = validate(name, url, kind, key_env)
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> dict[str, Any]:
            async with connect(server) as api:
                return await api.add_endpoint(
                    {"name": spec.name, "url": spec.url, "kind": spec.kind, "key_env": key_env}
                )

        added = run_async(remote())
    else:
        settings = load_settings()

        async def go() -> dict[str, Any]:
            async with opened(settings) as store:
                row = EndpointRow(name=spec.name, url=spec.url, kind=spec.kind, key_env=key_env)
                await store.endpoints.add(row)
                return Endpoint(spec=spec, state=row).to_dict()

        added = run_async(go())
    if as_json:
        print_json(added)
    else:
        out.print(f"added {added['name']} ({added['kind']}, {escape(added['url'])})")


@app.command("list")
def list_endpoints(as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Model endpoints: the environment's and the registered ones, with health, latency, models."""
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> list[dict[str, Any]]:
            async with connect(server) as api:
                return await api.endpoints()

        found = run_async(remote())
    else:
        settings = load_settings()

        async def go() -> list[dict[str, Any]]:
            async with opened(settings) as store:
                return [e.to_dict() for e in await listing(store, env_specs())]

        found = run_async(go())
    if as_json:
        print_json(found)
    elif found:
        out.print(endpoints_table(found))
    else:
        err.print("no endpoints: set ANTHROPIC_API_KEY (or another key) or add one")


@app.command("check")
def check(
    name: Annotated[str | None, typer.Argument(help="Only this endpoint; default: all.")] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Check endpoints now: health, latency, and the models they offer (exit 6: one is down)."""
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> list[dict[str, Any]]:
            async with connect(server) as api:
                if name is not None:
                    return [await api.check_endpoint(name)]
                names = [e["name"] for e in await api.endpoints()]
                return [await api.check_endpoint(n) for n in names]

        found = run_async(remote())
    else:
        settings = load_settings()

        async def go() -> list[dict[str, Any]]:
            env = env_specs()
            async with opened(settings) as store:
                if name is not None:
                    one = await find(store, env, name)
                    if one is None:
                        raise EndpointNotFound(f"no endpoint named {name!r}")
                    specs = [one.spec]
                else:
                    specs = [e.spec for e in await listing(store, env)]
                async with httpx.AsyncClient() as client:
                    await check_and_record(store, specs, client=client)
                checked = {s.name for s in specs}
                return [e.to_dict() for e in await listing(store, env) if e.spec.name in checked]

        found = run_async(go())
    if as_json:
        print_json(found)
    elif found:
        out.print(endpoints_table(found))
    else:
        err.print("no endpoints to check")
    if any(e["healthy"] is not True for e in found):
        raise typer.Exit(Exit.UNAVAILABLE)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The endpoint's name.")],
    server: ServerOption = None,
) -> None:
    """Forget a registered endpoint (exit 3 when there is none of that name)."""
    if name in ENV_NAMES:
        raise BadInput(f"{name!r} comes from the operator's environment: unset its variables")
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> None:
            async with connect(server) as api:
                await api.remove_endpoint(name)

        run_async(remote())
    else:
        settings = load_settings()

        async def go() -> bool:
            async with opened(settings) as store:
                return await store.endpoints.remove(name)

        if not run_async(go()):
            raise EndpointNotFound(f"no endpoint named {name!r}")
    out.print(f"removed {name}")


def health_text(e: dict[str, Any]) -> str:
    if e.get("healthy") is None:
        return "[dim]unchecked[/]"
    text = "[green]ok[/]" if e["healthy"] else "[red]down[/]"
    until = e.get("backoff_until")
    if until and until > time.time():
        text += f" [yellow](backing off {until - time.time():.0f}s)[/]"
    return text


def endpoints_table(found: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "KIND", "SOURCE", "HEALTH", "LATENCY", "CHECKED", "MODELS", "URL"):
        table.add_column(column, no_wrap=column not in ("MODELS", "URL"), overflow="fold")
    for e in found:
        models = e.get("models") or []
        shown = ", ".join(models[:4]) + (f" (+{len(models) - 4})" if len(models) > 4 else "")
        latency = e.get("latency_ms")
        checked = e.get("checked_at")
        health = health_text(e)
        if e.get("error") and not e.get("healthy"):
            health += f" [dim]{escape(str(e['error'])[:80])}[/]"
        table.add_row(
            escape(e["name"]),
            e["kind"],
            e.get("source", ""),
            health,
            f"{latency:.0f} ms" if latency is not None else "",
            f"{age(checked)} ago" if checked else "",
            escape(shown),
            escape(e["url"]),
        )
    return table
