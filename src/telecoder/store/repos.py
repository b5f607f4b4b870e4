"""The repository registry and the channel routes to it.

A registered repository has a short name a message can use (``app: fix the typo``), a URL or
path (what ``--repo`` takes), and the engine and priority its sessions get unless the message
says otherwise. A route gives a channel's place (a Slack channel, a Telegram chat, a Linear team,
a Jira project, or ``*`` for all of the channel's places) a default repository.
"""

from __future__ import annotations

import builtins
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from telecoder.errors import BadInput, RegisteredRepoNotFound
from telecoder.store.db import Database
from telecoder.store.schema import repo_routes, repos

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ANY_PLACE = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class Repo:
    name: str
    url: str
    engine: str | None
    priority: int
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "engine": self.engine,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    channel: str
    place: str
    repo: str

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "place": self.place, "repo": self.repo}


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadInput(
            f"invalid repository name {name!r}: lower-case letters, digits, '.', '-' and '_', "
            "at most 64, starting with a letter or digit"
        )
    return name


def _repo(row: Row[Any]) -> Repo:
    m = row._mapping
    return Repo(
        name=m["name"],
        url=m["url"],
        engine=m["engine"],
        priority=m["priority"],
        created_at=m["created_at"],
    )


class Repos:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _upsert(self) -> Any:
        return sqlite.insert if self._db.is_sqlite else postgresql.insert

    async def add(self, name: str, url: str, *, engine: str | None, priority: int) -> Repo:
        """Register ``name`` (or change what it names)."""
        check_name(name)
        values = {"url": url, "engine": engine, "priority": priority}
        statement = self._upsert()(repos).values(name=name, created_at=time.time(), **values)
        async with self._db.write() as conn:
            await conn.execute(
                statement.on_conflict_do_update(index_elements=["name"], set_=values)
            )
        return await self.get(name)

    async def get(self, name: str) -> Repo:
        async with self._db.read() as conn:
            row = (await conn.execute(select(repos).where(repos.c.name == name))).first()
        if row is None:
            raise RegisteredRepoNotFound(f"no repository is registered as {name!r}")
        return _repo(row)

    async def list(self) -> builtins.list[Repo]:
        """Highest priority first, then by name."""
        query = select(repos).order_by(repos.c.priority.desc(), repos.c.name)
        async with self._db.read() as conn:
            return [_repo(row) for row in (await conn.execute(query)).all()]

    async def remove(self, name: str) -> None:
        """Unregister ``name`` and the routes to it."""
        async with self._db.write() as conn:
            done = await conn.execute(delete(repos).where(repos.c.name == name))
            if not done.rowcount:
                raise RegisteredRepoNotFound(f"no repository is registered as {name!r}")
            await conn.execute(delete(repo_routes).where(repo_routes.c.repo == name))

    # --- routes ----------------------------------------------------------------------------

    async def route(self, channel: str, place: str, repo: str) -> Route:
        """Make ``repo`` the default of ``channel``'s ``place`` (``*``: of all its places)."""
        await self.get(repo)
        values = {"repo": repo, "created_at": time.time()}
        statement = self._upsert()(repo_routes).values(channel=channel, place=place, **values)
        async with self._db.write() as conn:
            await conn.execute(
                statement.on_conflict_do_update(index_elements=["channel", "place"], set_=values)
            )
        return Route(channel=channel, place=place, repo=repo)

    async def unroute(self, channel: str, place: str) -> bool:
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(repo_routes).where(
                    repo_routes.c.channel == channel, repo_routes.c.place == place
                )
            )
        return bool(done.rowcount)

    async def routes(self) -> builtins.list[Route]:
        query = select(repo_routes).order_by(repo_routes.c.channel, repo_routes.c.place)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [Route(channel=r.channel, place=r.place, repo=r.repo) for r in rows]

    async def default_for(self, channel: str, place: str) -> Repo | None:
        """The place's default repository, else the channel's (``*``), else the only one
        registered; None when that leaves a choice."""
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(repo_routes.c.place, repo_routes.c.repo).where(
                        repo_routes.c.channel == channel,
                        repo_routes.c.place.in_([place, ANY_PLACE]),
                    )
                )
            ).all()
        chosen = {row.place: row.repo for row in rows}
        name = chosen.get(place) or chosen.get(ANY_PLACE)
        if name is not None:
            return await self.get(name)
        every = await self.list()
        return every[0] if len(every) == 1 else None
