"""``telecoder repos``: the registered repositories channel messages run on, and their routes.

Locally they read and write the database; with ``--server`` they ask a TeleCoder server (which
checks a local path on its own machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from telecoder import registry
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json
from telecoder.errors import RegisteredRepoNotFound
from telecoder.gitcmd import is_url
from telecoder.repo_registry import CHANNELS, check_channel, check_place, checked_repo

app = typer.Typer(
    help="Registered repositories (what `app: fix …` in a channel names) and the channels' "
    "default repositories (routes).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ChannelArg = Annotated[str, typer.Argument(help=f"The channel: {', '.join(CHANNELS)}.")]
PlaceArg = Annotated[
    str,
    typer.Argument(
        help="A Slack channel id, a Telegram chat id, a Linear team key, a Jira project key, "
        "or '*' for all of the channel's places (a negative Telegram id after --: "
        "`repos route telegram -- -100123 app`)."
    ),
]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A short name (lowercase), e.g. app.")],
    url: Annotated[str, typer.Argument(help="What --repo takes: a URL, owner/name or a path.")],
    engine: Annotated[
        str | None, typer.Option("--engine", "-e", help="The engine its sessions run with.")
    ] = None,
    priority: Annotated[int, typer.Option(help="Its sessions' queue priority.")] = 0,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Register a repository, or change what NAME names (exit 2 for bad input)."""
    if server:
        from telecoder.cli.remote import connect

        body = {"name": name, "url": _as_sent(url), "engine": engine, "priority": priority}

        async def remote() -> dict[str, Any]:
            async with connect(server) as api:
                return await api.add_repo(body)

        added = run_async(remote())
    else:
        settings = load_settings()

        async def go() -> dict[str, Any]:
            spec = await checked_repo(
                name,
                url,
                engine=engine,
                priority=priority,
                engines=registry.names("engines"),
                settings=settings,
            )
            async with opened(settings) as store:
                repo = await store.repos.add(
                    spec.name, spec.url, engine=spec.engine, priority=spec.priority
                )
            return repo.to_dict()

        added = run_async(go())
    if as_json:
        print_json(added)
    else:
        out.print(f"registered {added['name']} ({escape(added['url'])})")


@app.command("list")
def list_repos(as_json: JsonOption = False, server: ServerOption = None) -> None:
    """The registered repositories (highest priority first) and the routes to them."""
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> dict[str, Any]:
            async with connect(server) as api:
                return await api.repos()

        found = run_async(remote())
    else:
        settings = load_settings()

        async def go() -> dict[str, Any]:
            async with opened(settings) as store:
                repos = await store.repos.list()
                routes = await store.repos.routes()
            return {"repos": [r.to_dict() for r in repos], "routes": [r.to_dict() for r in routes]}

        found = run_async(go())
    if as_json:
        print_json(found)
        return
    if not found["repos"]:
        err.print("no repositories registered: telecoder repos add NAME URL")
        return
    table = Table("NAME", "URL", "ENGINE", "PRIORITY", "ROUTES", box=None, header_style="bold")
    for repo in found["repos"]:
        mine = [r for r in found["routes"] if r["repo"] == repo["name"]]
        routes = [f"{r['channel']}:{r['place']}" for r in mine]
        table.add_row(
            escape(repo["name"]),
            escape(repo["url"]),
            repo["engine"] or "",
            str(repo["priority"]),
            escape(", ".join(routes)),
        )
    out.print(table)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The repository's name.")],
    server: ServerOption = None,
) -> None:
    """Unregister a repository and the routes to it (exit 3 when there is none of that name)."""
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> None:
            async with connect(server) as api:
                await api.remove_repo(name)

        run_async(remote())
    else:
        settings = load_settings()

        async def go() -> None:
            async with opened(settings) as store:
                await store.repos.remove(name)

        run_async(go())
    out.print(f"removed {name}")


@app.command("route")
def route(
    channel: ChannelArg,
    place: PlaceArg,
    name: Annotated[str, typer.Argument(help="The registered repository.")],
    server: ServerOption = None,
) -> None:
    """Make NAME the default repository of a channel's place (exit 3: NAME is not registered)."""
    check_channel(channel)
    check_place(place)
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> None:
            async with connect(server) as api:
                await api.route(channel, place, name)

        run_async(remote())
    else:
        settings = load_settings()

        async def go() -> None:
            async with opened(settings) as store:
                await store.repos.route(channel, place, name)

        run_async(go())
    out.print(f"{channel} {place} → {name}")


@app.command("unroute")
def unroute(channel: ChannelArg, place: PlaceArg, server: ServerOption = None) -> None:
    """Remove a place's default repository (exit 3 when it has none)."""
    check_channel(channel)
    check_place(place)
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> None:
            async with connect(server) as api:
                await api.unroute(channel, place)

        run_async(remote())
    else:
        settings = load_settings()

        async def go() -> bool:
            async with opened(settings) as store:
                return await store.repos.unroute(channel, place)

        if not run_async(go()):
            raise RegisteredRepoNotFound(f"no route for {channel} {place}")
    out.print(f"removed the route of {channel} {place}")


def _as_sent(url: str) -> str:
    """A URL or ``owner/name`` as given; a local path made absolute here (the server checks it
    on its machine)."""
    path = Path(url).expanduser()
    if is_url(url) or (url.count("/") == 1 and not path.exists()):
        return url
    return str(path.absolute())
