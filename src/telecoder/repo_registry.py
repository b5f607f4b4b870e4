"""What ``telecoder repos`` and ``/api/repos`` check before the registry stores anything.

A repository is registered under a short name with what ``--repo`` takes, checked by intake's
rules: a local path must be a git repository (stored as its absolute top level), a URL must
carry no credential (it would be stored and shown), ``owner/name`` is a GitHub repository, and
nothing may start with ``-`` (git would read it as an option). A route names one of the chat and
ticket channels and a place on it (an id or key, or ``*`` for all of the channel's places).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from telecoder.errors import BadInput, EngineNotFound
from telecoder.forges.remote import shorthand_url
from telecoder.gitcmd import is_url
from telecoder.intake import CREDENTIALS_IN_URL
from telecoder.masking import url_credentials, without_credentials
from telecoder.settings import Settings
from telecoder.store.repos import ANY_PLACE, check_name
from telecoder.workspace import Workspace

CHANNELS = ("slack", "telegram", "linear", "jira")
_PLACE = re.compile(r"^(-[0-9]{1,30}|[A-Za-z0-9][A-Za-z0-9_.:@#-]{0,127})$")
MAX_PRIORITY = 1_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoSpec:
    name: str
    url: str
    engine: str | None
    priority: int


async def checked_repo(
    name: str,
    url: str,
    *,
    engine: str | None,
    priority: int,
    engines: Collection[str],
    settings: Settings,
) -> RepoSpec:
    """The registration, checked, with a local path made its repository's absolute top level.
    Raises ``BadInput`` (or a subclass) saying what is wrong."""
    check_name(name)
    url = url.strip()
    if not url:
        raise BadInput("the repository URL or path is empty")
    if url.startswith("-"):
        raise BadInput(f"the repository {url[:80]!r} starts with '-', which git reads as an option")
    if url_credentials(url):
        raise BadInput(CREDENTIALS_IN_URL.format(url=without_credentials(url)))
    if engine is not None and engine not in engines:
        known = ", ".join(sorted(engines))
        raise EngineNotFound(f"unknown engine {engine!r} (known: {known})")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise BadInput(f"the priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    try:
        local = not is_url(url) and Path(url).expanduser().exists()
        if not local and not is_url(url) and shorthand_url(url, settings.github_api_url):
            return RepoSpec(name=name, url=url, engine=engine, priority=priority)  # owner/name
        # Resolving reads the path or URL only; the workspace's directories are not touched.
        home = settings.home
        workspace = Workspace(mirrors=home / "mirrors", worktrees=home / "worktrees")
        source = await workspace.resolve(url)
    except (OSError, RuntimeError) as e:  # a name too long, a symlink loop, no home directory
        why = (e.strerror if isinstance(e, OSError) else None) or str(e)
        raise BadInput(f"cannot read the repository {url[:80]!r}: {why}") from None
    return RepoSpec(name=name, url=source.spec, engine=engine, priority=priority)


def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise BadInput(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    return channel


def check_place(place: str) -> str:
    """A Slack channel id, a Telegram chat id, a Linear team key, a Jira project key, or ``*``."""
    if place != ANY_PLACE and not _PLACE.match(place):
        raise BadInput(
            f"invalid place {place[:80]!r}: a channel or chat id, a team or project key "
            "(letters, digits, '_', '.', ':', '@', '#', '-'; a group's Telegram id may be "
            "negative), or '*' for all of the channel's places"
        )
    return place
