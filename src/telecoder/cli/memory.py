"""``telecoder memory``: what finished sessions taught about a repository, seen and forgotten.

A repository is named as ``--repo`` names it (a path, ``owner/name``, a URL) or by its registered
name, and resolved as sessions resolve it (``memory_scope``), so ``memory list .`` shows what the
sessions run with ``--repo .`` remembered. Memories are printed as the API's JSON
(``Memory.to_dict``) with ``--json``, the same locally and with ``--server``. ``add`` goes through
``memory.remember``: masked and embedded like a session's summary.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from telecoder import memory
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import err, out, print_json, short
from telecoder.client import Client
from telecoder.domain import MemoryKind
from telecoder.embedders import build_embedder
from telecoder.errors import BadInput
from telecoder.gitcmd import is_url
from telecoder.masking import Masker
from telecoder.memory_scope import check_user, repo_key
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.store.memories import MAX_LIST

T = TypeVar("T")
Json = dict[str, Any]

# What a person may add by hand (a session's summary is the pipeline's to write).
ADDABLE = (MemoryKind.NOTE, MemoryKind.LESSON, MemoryKind.FACT)

app = typer.Typer(
    help="Memories: what finished sessions taught about each repository (given to the next "
    "session's agent), and users' facts.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
IdArg = Annotated[int, typer.Argument(help="The memory's id.", min=1, metavar="ID")]
UserOption = Annotated[
    str | None,
    typer.Option(
        "--user", help="A user's memories (channel:id, e.g. telegram:42).", show_default=False
    ),
]


class Backend(Protocol):
    """Where the commands read and write: the local database or a server. Both answer with
    the API's JSON, so every command prints one thing whichever it talks to."""

    async def list(
        self,
        repo: str | None,
        *,
        user: str | None,
        kind: str | None,
        limit: int,
        before: int | None,
    ) -> builtins.list[Json]: ...

    async def scopes(self) -> Json:
        """``{"repos": [{repo, memories}], "users": [{user, memories}]}``."""
        ...

    async def get(self, memory_id: int) -> Json: ...

    async def forget(self, memory_id: int) -> Json: ...

    async def add(self, repo: str | None, *, user: str | None, text: str, kind: str) -> Json: ...


class LocalMemories:
    """The local database; names resolved on this machine."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    async def _key(self, repo: str | None) -> str | None:
        if repo is None:
            return None
        return await repo_key(repo, store=self._store, settings=self._settings)

    async def list(
        self,
        repo: str | None,
        *,
        user: str | None,
        kind: str | None,
        limit: int,
        before: int | None,
    ) -> builtins.list[Json]:
        found = await self._store.memories.list(
            repo=await self._key(repo),
            user=user,
            kind=MemoryKind(kind) if kind else None,
            limit=limit,
            before=before,
        )
        return [m.to_dict() for m in found]

    async def scopes(self) -> Json:
        repos = await self._store.memories.repos()
        users = await self._store.memories.users()
        return {
            "repos": [{"repo": r, "memories": n} for r, n in repos],
            "users": [{"user": u, "memories": n} for u, n in users],
        }

    async def get(self, memory_id: int) -> Json:
        return (await self._store.memories.get(memory_id)).to_dict()

    async def forget(self, memory_id: int) -> Json:
        return (await self._store.memories.forget(memory_id)).to_dict()

    async def add(self, repo: str | None, *, user: str | None, text: str, kind: str) -> Json:
        added = await memory.remember(
            self._store,
            text=text,
            masker=Masker.from_settings(self._settings),
            embedder=build_embedder(self._settings),
            repo=await self._key(repo),
            user=user,
            kind=MemoryKind(kind),
        )
        return added.to_dict()


class RemoteMemories:
    """A TeleCoder server's ``/api/memories``; it resolves names on its machine."""

    def __init__(self, api: Client) -> None:
        self._api = api

    async def list(
        self,
        repo: str | None,
        *,
        user: str | None,
        kind: str | None,
        limit: int,
        before: int | None,
    ) -> builtins.list[Json]:
        return await self._api.memories(
            repo=_as_sent(repo), user=user, kind=kind, limit=limit, before=before
        )

    async def scopes(self) -> Json:
        return {"repos": await self._api.memory_repos(), "users": await self._api.memory_users()}

    async def get(self, memory_id: int) -> Json:
        return await self._api.memory(memory_id)

    async def forget(self, memory_id: int) -> Json:
        return await self._api.forget_memory(memory_id)

    async def add(self, repo: str | None, *, user: str | None, text: str, kind: str) -> Json:
        body = {"repo": _as_sent(repo), "user": user, "text": text, "kind": kind}
        return await self._api.add_memory(body)


def _as_sent(repo: str | None) -> str | None:
    """A URL, ``owner/name`` or a registered name as given; a local path made absolute here
    (the server resolves it on its machine, as it does ``run --repo`` paths)."""
    if repo is None or is_url(repo):
        return repo
    with contextlib.suppress(OSError, RuntimeError):
        path = Path(repo).expanduser()
        if path.exists():
            return str(path.absolute())
    return repo


@contextlib.asynccontextmanager
async def _backend(server: str | None) -> AsyncIterator[Backend]:
    if server:
        from telecoder.cli.remote import connect

        async with connect(server) as api:
            yield RemoteMemories(api)
        return
    settings = load_settings()
    async with opened(settings) as store:
        yield LocalMemories(store, settings)


def _call(server: str | None, action: Callable[[Backend], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _backend(server) as backend:
            return await action(backend)

    return run_async(go())


def _kind(value: str | None, allowed: tuple[MemoryKind, ...] = tuple(MemoryKind)) -> str | None:
    if value is None or value in allowed:
        return value
    known = ", ".join(k.value for k in allowed)
    raise BadInput(f"unknown kind {value!r} (known: {known})")


def _when(value: str | None) -> str:
    if not value:
        return "-"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _scope(m: Json) -> str:
    return " · ".join(str(v) for v in (m["repo"], m["user"] and f"user {m['user']}") if v)


def _print_scopes(scopes: Json, as_json: bool) -> None:
    if as_json:
        print_json(scopes)
        return
    if not scopes["repos"] and not scopes["users"]:
        err.print("no memories yet: sessions remember what they did when they finish")
        return
    table = Table("REPOSITORY OR USER", "MEMORIES", box=None, header_style="bold")
    for r in scopes["repos"]:
        table.add_row(escape(r["repo"]), str(r["memories"]))
    for u in scopes["users"]:
        table.add_row(escape(f"user {u['user']}"), str(u["memories"]))
    out.print(table)


# --- commands ---------------------------------------------------------------------------------


@app.command("list")
def list_memories(
    repo: Annotated[
        str | None,
        typer.Argument(
            help="A repository: a path, owner/name, a URL or a registered name. Without it "
            "(and without --user): the repositories and users that have memories, with how "
            "many.",
            show_default=False,
        ),
    ] = None,
    user: UserOption = None,
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: session, lesson, fact, note.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1, max=MAX_LIST)] = 50,
    before: Annotated[
        int | None, typer.Option(help="Only ids below this one (the next page).", min=1)
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """A repository's (or a user's) memories, newest first; or who has memories."""
    _kind(kind)
    if user is not None:
        check_user(user)
    if repo is None and user is None:
        _print_scopes(_call(server, lambda b: b.scopes()), as_json)
        return
    found = _call(
        server,
        lambda b: b.list(repo, user=user, kind=kind, limit=limit, before=before),
    )
    if as_json:
        print_json(found)
        return
    if not found:
        err.print("no memories")
        return
    table = Table("ID", "KIND", "CREATED", "SESSION", "TEXT", box=None, header_style="bold")
    for m in found:
        table.add_row(
            str(m["id"]),
            m["kind"],
            _when(m["created_at"]),
            m["session_id"] or "",
            escape(short(m["text"], 100)),
        )
    out.print(table)


@app.command("show")
def show(memory_id: IdArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """One memory, in full (exit 3 when there is none of that id)."""
    found = _call(server, lambda b: b.get(memory_id))
    if as_json:
        print_json(found)
        return
    rows = [
        ("id", str(found["id"])),
        ("of", _scope(found)),
        ("kind", found["kind"]),
        ("created", _when(found["created_at"])),
        ("session", found["session_id"] or ""),
        ("prompt", found["prompt"] or ""),
        ("outcome", found["outcome"] or ""),
        ("files", ", ".join(found["files"])),
        ("embedder", found["embedder"] or "(none: found by its words only)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        if value:
            out.print(f"[bold]{key.ljust(width)}[/]  {escape(value)}")
    out.print(escape(found["text"]))


@app.command("forget")
def forget(memory_id: IdArg, as_json: JsonOption = False, server: ServerOption = None) -> None:
    """Delete a memory for good (exit 3 when there is none of that id); prints what it was."""
    gone = _call(server, lambda b: b.forget(memory_id))
    if as_json:
        print_json(gone)
    else:
        out.print(f"forgot memory {gone['id']} of {escape(_scope(gone))}")


@app.command("add")
def add(
    first: Annotated[
        str,
        typer.Argument(
            help="The repository: a path, owner/name, a URL or a registered name. With --user "
            "it may be left out (`memory add --user telegram:42 TEXT`): a memory of the user.",
            metavar="REPO",
            show_default=False,
        ),
    ],
    second: Annotated[
        str | None,
        typer.Argument(help="What to remember.", metavar="TEXT", show_default=False),
    ] = None,
    user: UserOption = None,
    kind: Annotated[str, typer.Option(help="note, lesson or fact.")] = MemoryKind.NOTE.value,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Remember something by hand (masked and embedded like every memory); prints it."""
    _kind(kind, ADDABLE)
    if user is not None:
        check_user(user)
    if second is not None:
        repo, text = first, second
    elif user is not None:
        repo, text = None, first
    else:
        raise BadInput("give REPO TEXT (or --user USER TEXT for a user's memory)")
    if not text.strip():
        raise BadInput("a memory needs some text")
    added = _call(server, lambda b: b.add(repo, user=user, text=text, kind=kind))
    if as_json:
        print_json(added)
    else:
        out.print(f"remembered {added['id']} of {escape(_scope(added))}")
