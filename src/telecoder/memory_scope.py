"""Which memories a name means: a repository named as sessions name it, or a user.

Memories are stored under the ``repo`` string of the session that made them, which intake wrote
(``Session.repo``): a local path becomes its repository's absolute top level, ``owner/name`` the
GitHub URL, a URL stays as given. ``telecoder memory list .`` must find the memories of sessions
run with ``--repo .``, so a name given here is resolved by the same rules, and a registered
repository's name (``telecoder repos``) means the repository it names, as in a channel. The
server resolves names sent to ``/api/memories`` (a path on its own machine, its own registry).
"""

from __future__ import annotations

from pathlib import Path

from telecoder.errors import BadInput, RegisteredRepoNotFound, RepoNotFound
from telecoder.forges.remote import shorthand_url
from telecoder.gitcmd import is_url
from telecoder.intake import CREDENTIALS_IN_URL
from telecoder.masking import url_credentials, without_credentials
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.workspace import Workspace

MAX_REPO = 2048  # characters of a repository name, URL or path
MAX_USER = 255  # the column's length


async def repo_key(name: str, *, store: Store, settings: Settings) -> str:
    """The ``repo`` the memories of ``name`` are stored under; ``BadInput`` (``RepoNotFound``,
    ``NotAGitRepo``) saying why when it names nothing."""
    name = name.strip()
    _check(name)
    if is_url(name):
        return name
    path, exists = _local(name)
    if exists:
        return await _top_level(path, settings)
    if url := shorthand_url(name, settings.github_api_url):
        return url
    try:
        registered = await store.repos.get(name)
    except RegisteredRepoNotFound:
        registered = None
    if registered is not None:
        # Stored as intake would take it: a top level, a URL, or owner/name.
        return shorthand_url(registered.url, settings.github_api_url) or registered.url
    if path.is_absolute():
        return str(path)  # a repository since removed: its memories can still be seen, forgotten
    raise RepoNotFound(
        f"no repository {name[:80]!r}: not a path, a URL, owner/name, or a registered "
        "repository's name (telecoder repos list)"
    )


def check_user(user: str) -> str:
    """A user as memories name one (``channel:id``): not blank, no NUL, at most ``MAX_USER``."""
    if not user.strip():
        raise BadInput("the user is empty")
    if "\x00" in user or len(user) > MAX_USER:
        raise BadInput(f"invalid user {user[:80]!r}: at most {MAX_USER} characters, no NUL")
    return user


def _check(name: str) -> None:
    if not name:
        raise BadInput("the repository is empty")
    if "\x00" in name or len(name) > MAX_REPO:
        raise BadInput(f"invalid repository {name[:80]!r}: at most {MAX_REPO} characters, no NUL")
    if name.startswith("-"):
        raise BadInput(
            f"the repository {name[:80]!r} starts with '-', which git reads as an option"
        )
    if url_credentials(name):
        raise BadInput(CREDENTIALS_IN_URL.format(url=without_credentials(name)))


def _local(name: str) -> tuple[Path, bool]:
    try:
        path = Path(name).expanduser()
        return path, path.exists()
    except (OSError, RuntimeError) as e:  # a name too long, a symlink loop, no home directory
        raise _unreadable(name, e) from None


async def _top_level(path: Path, settings: Settings) -> str:
    """The path's repository as intake names it (reading it only)."""
    home = settings.home
    workspace = Workspace(mirrors=home / "mirrors", worktrees=home / "worktrees")
    try:
        return (await workspace.resolve(str(path))).spec
    except (OSError, RuntimeError) as e:
        raise _unreadable(str(path), e) from None


def _unreadable(name: str, e: OSError | RuntimeError) -> BadInput:
    why = (e.strerror if isinstance(e, OSError) else None) or str(e)
    return BadInput(f"cannot read the repository {name[:80]!r}: {why}")
