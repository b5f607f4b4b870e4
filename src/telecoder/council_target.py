"""What ``council start TARGET`` reviews: a diff (a ``.diff``/``.patch`` file, or ``-`` for
stdin, read by the caller), a pull request (its URL, ``#N`` or ``N``, on GitHub), a branch of
the repository's remote, or else a question.

A branch is recognised by asking the remote (``git ls-remote``), which also gives the commit it
is compared with (``--base``, else the remote's default branch), so a reviewer can be told
exactly which commits to read. A pull request is looked up in GitHub's REST API for its head
and base branches; one from a fork is refused (its head is not a branch of this remote): its
diff can be reviewed instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from telecoder.council import Target, pull_request_of, question_target
from telecoder.errors import BadInput, BaseRefNotFound, ForgeError, RepoNotFound
from telecoder.forges.github import web_host
from telecoder.forges.remote import parse_remote
from telecoder.gitcmd import git_check
from telecoder.masking import without_credentials
from telecoder.settings import Settings

_BRANCHLIKE = re.compile(r"^[A-Za-z0-9._/@{}+-]{1,200}$")


async def resolve(
    text: str,
    *,
    remote_url: str,
    base: str | None,
    settings: Settings,
    env: Mapping[str, str] | None = None,
) -> Target:
    """The target ``text`` names (not a diff: the caller reads those)."""
    if (pull := pull_request_of(text)) is not None:
        slug, number = pull
        return await pull_request(settings, remote_url, slug, number, env)
    if _BRANCHLIKE.match(text.strip()) and not text.startswith("-"):
        found = await branch(remote_url, text.strip(), base, env)
        if found is not None:
            return found
    return question_target(text)


async def branch(
    remote_url: str, name: str, base: str | None, env: Mapping[str, str] | None = None
) -> Target | None:
    """The branch ``name`` of the remote, compared with ``base`` (default: the remote's default
    branch); None when the remote has no such branch."""
    code, out, err = await git_check(
        None, "ls-remote", "--symref", "--", remote_url, "HEAD", "refs/heads/*", env=env
    )
    if code != 0:
        raise RepoNotFound(f"cannot read {without_credentials(remote_url)}: {err.strip()[-300:]}")
    refs: dict[str, str] = {}
    default = None
    for line in out.splitlines():
        left, _, ref = line.partition("\t")
        if left.startswith("ref: ") and ref == "HEAD":
            default = left.removeprefix("ref: ").removeprefix("refs/heads/")
        elif ref:
            refs[ref] = left
    if f"refs/heads/{name}" not in refs:
        return None
    against = base or default
    if against is None:
        raise BadInput("the remote has no default branch: pass --base")
    base_sha = refs.get(f"refs/heads/{against}")
    if base_sha is None:
        raise BaseRefNotFound(f"base branch {against!r} does not exist in the remote")
    if against == name:
        raise BadInput(f"the branch {name!r} is its own base: pass --base")
    return Target(kind="branch", ref=name, base=against, base_sha=base_sha)


async def pull_request(
    settings: Settings,
    remote_url: str,
    slug: str | None,
    number: int,
    env: Mapping[str, str] | None = None,
) -> Target:
    """Pull request ``number`` of ``slug`` (default: the repository's own on GitHub)."""
    if slug is None:
        nowhere = BadInput(f"#{number}: the repository has no GitHub remote to look it up in")
        try:
            remote = parse_remote(remote_url)
            owner, name = remote.slug()
        except (ForgeError, ValueError):
            raise nowhere from None
        if remote.host is None or remote.host != web_host(settings.github_api_url):
            raise nowhere
        slug = f"{owner}/{name}"
    data = await _github_pull(settings, slug, number)
    head, into = data.get("head") or {}, data.get("base") or {}
    head_repo = (head.get("repo") or {}).get("full_name")
    if head_repo is None or head_repo.lower() != slug.lower():
        raise BadInput(
            f"pull request #{number} comes from another repository ({head_repo or 'deleted'}): "
            "review its diff instead (e.g. gh pr diff N | telecoder council start -)"
        )
    found = await branch(remote_url, str(head.get("ref")), str(into.get("ref")), env)
    if found is None:
        raise BadInput(
            f"pull request #{number}: its branch {head.get('ref')!r} is not in the remote"
        )
    return Target(
        kind="pr",
        ref=found.ref,
        base=found.base,
        base_sha=found.base_sha,
        number=number,
        url=str(data.get("html_url") or "") or None,
    )


async def _github_pull(settings: Settings, slug: str, number: int) -> dict[str, Any]:
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "telecoder"}
    if settings.github_token is not None:
        headers["Authorization"] = f"Bearer {settings.github_token.get_secret_value()}"
    url = f"{settings.github_api_url.rstrip('/')}/repos/{slug}/pulls/{number}"
    try:
        async with httpx.AsyncClient(timeout=30.0, headers=headers) as client:
            response = await client.get(url)
    except httpx.HTTPError as e:
        raise ForgeError(f"cannot ask GitHub for pull request #{number}: {e}") from None
    if response.status_code == 404:
        raise BadInput(f"no pull request #{number} in {slug} (or no access to it)")
    if response.status_code != 200:
        raise ForgeError(f"GitHub answered {response.status_code} for pull request #{number}")
    data: dict[str, Any] = response.json()
    return data
