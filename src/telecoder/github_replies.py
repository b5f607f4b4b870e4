"""Talking back on GitHub: who may trigger, 👀, the status comment, replies in threads.

Each session from GitHub has one status comment on its issue or pull request, found again by
the marker it carries (``<!-- telecoder session=… -->``), so writing it twice edits it instead
of adding another: queued (with a link to the session) → the outcome. The outcome is written by
an in-process subscriber of the outbox (``subscriber``): the notification row is committed with
the session's final status, so a server that restarts still tells GitHub, once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from typing import Any
from urllib.parse import quote

from telecoder import outcome as outcomes
from telecoder import repoconfig
from telecoder.channels import github as channel
from telecoder.domain import SessionStatus
from telecoder.errors import BadInput, ForgeError
from telecoder.forges.github import GitHubApi, GitHubAPIError, GitHubForge
from telecoder.settings import Settings
from telecoder.store import Store

log = logging.getLogger(__name__)

PERMISSION_TTL = 60.0
ENDED = "<!-- telecoder ended -->"
_ICONS = {"queued": "⏳", "running": "🏃", "succeeded": "✅", "failed": "❌", "dead": "❌"}


class GitHubReplies:
    def __init__(self, settings: Settings, forge: GitHubForge | None = None) -> None:
        self.settings = settings
        self.forge = forge or GitHubForge.from_settings(settings)
        self._permissions: dict[tuple[str, str], tuple[float, str]] = {}
        self._writing: dict[str, asyncio.Lock] = {}  # session id -> its status comment's writer

    # --- who may trigger ----------------------------------------------------------------------

    async def may_trigger(self, full_name: str, login: str) -> tuple[bool, str]:
        """Whether ``login`` may start sessions on ``full_name``, and the permission seen."""
        allowed = {user.lower() for user in self.settings.github_allowed_users}
        if login.lower() in allowed:
            return True, "allowed"
        permission = await self.permission(full_name, login)
        return permission in channel.WRITERS, permission

    async def permission(self, full_name: str, login: str) -> str:
        """The user's permission on the repository, asked of the API and kept a minute."""
        key = (full_name.lower(), login.lower())
        cached = self._permissions.get(key)
        if cached is not None and time.monotonic() - cached[0] < PERMISSION_TTL:
            return cached[1]
        async with self.forge.api(full_name) as api:
            data = await api.call(
                "GET", f"{_repo(full_name)}/collaborators/{quote(login, safe='')}/permission"
            )
        permission = str((data or {}).get("permission") or "none")
        self._permissions[key] = (time.monotonic(), permission)
        return permission

    async def repo_config(self, full_name: str) -> repoconfig.RepoConfig:
        """The repository's ``.telecoder.yml`` on its default branch (defaults when it has
        none); BadInput when it is malformed."""
        path = f"{_repo(full_name)}/contents/{repoconfig.FILENAME}"
        async with self.forge.api(full_name) as api:
            try:
                data = await api.call("GET", path)
            except GitHubAPIError as e:
                if e.status == 404:
                    return repoconfig.RepoConfig()
                raise
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, str) or data.get("encoding") != "base64":
            return repoconfig.RepoConfig()
        try:
            raw = base64.b64decode(content)
        except (binascii.Error, ValueError):
            raise BadInput(
                f"GitHub sent {repoconfig.FILENAME} in a form it cannot be read"
            ) from None
        return repoconfig.from_bytes(raw)

    async def pull(self, full_name: str, number: int) -> dict[str, Any]:
        async with self.forge.api(full_name) as api:
            data = await api.call("GET", f"{_repo(full_name)}/pulls/{number}")
        if not isinstance(data, dict):
            raise ForgeError("GitHub answered with something that is not a pull request")
        return data

    async def pull_files(self, full_name: str, number: int) -> tuple[str, ...]:
        """The files a pull request changes, one line each (the first 100)."""
        async with self.forge.api(full_name) as api:
            data = await api.call(
                "GET", f"{_repo(full_name)}/pulls/{number}/files", params={"per_page": "100"}
            )
        return channel.file_summary(data)

    # --- replies ------------------------------------------------------------------------------

    async def acknowledge(self, trigger: channel.Trigger) -> None:
        """👀 on the comment that asked (or on the issue, for a label)."""
        repo = _repo(trigger.full_name)
        if trigger.comment_id is None:
            path = f"{repo}/issues/{trigger.number}/reactions"
        elif trigger.review_comment:
            path = f"{repo}/pulls/comments/{trigger.comment_id}/reactions"
        elif trigger.event == "pull_request_review":
            return  # a review takes no reactions
        else:
            path = f"{repo}/issues/comments/{trigger.comment_id}/reactions"
        async with self.forge.api(trigger.full_name) as api:
            await api.call("POST", path, json={"content": "eyes"})

    async def say(self, trigger: channel.Trigger, text: str) -> None:
        """A reply: in the review thread for a review comment, else on the issue or PR."""
        repo = _repo(trigger.full_name)
        body = f"{channel.MARKER} -->\n{text}"
        async with self.forge.api(trigger.full_name) as api:
            if trigger.review_comment and trigger.comment_id is not None:
                path = f"{repo}/pulls/{trigger.number}/comments/{trigger.comment_id}/replies"
                await api.call("POST", path, json={"body": body})
            else:
                await api.call(
                    "POST", f"{repo}/issues/{trigger.number}/comments", json={"body": body}
                )

    async def say_once(self, full_name: str, number: int, key: str, text: str) -> bool:
        """A comment on the issue or pull request, unless one with ``key`` is there already;
        whether it was written."""
        repo = _repo(full_name)
        marker = f"{channel.MARKER} {key} -->"
        async with self.forge.api(full_name) as api:
            if await self._find(api, repo, number, marker) is not None:
                return False
            body = f"{marker}\n{text}"
            await api.call("POST", f"{repo}/issues/{number}/comments", json={"body": body})
        return True

    async def status(self, session: dict[str, Any]) -> None:
        """Write the session's status comment (create it, or edit the one there).

        One writer per session at a time in this process: the welcome, the running watcher
        and the outcome subscriber would otherwise each find no comment and each add one."""
        session_id = str(session.get("id"))
        lock = self._writing.setdefault(session_id, asyncio.Lock())
        try:
            async with lock:
                await self._status(session)
        finally:
            if _ended(session) and not lock.locked():
                self._writing.pop(session_id, None)

    async def _status(self, session: dict[str, Any]) -> None:
        origin = session.get("origin") or {}
        full_name, number = origin.get("repo"), origin.get("number")
        if not isinstance(full_name, str) or not isinstance(number, int):
            return
        repo = _repo(full_name)
        marker = channel.status_marker(str(session["id"]))
        body = f"{marker}\n{self.describe(session)}"
        if self.forge.app is not None and isinstance(origin.get("installation_id"), int):
            self.forge.app.remember(full_name, origin["installation_id"])
        if _ended(session):
            body += f"\n{ENDED}"
        async with self.forge.api(full_name) as api:
            found = await self._find_comment(api, repo, number, marker)
            if found is None:
                await api.call("POST", f"{repo}/issues/{number}/comments", json={"body": body})
            elif ENDED in found[1] and not _ended(session):
                return  # the outcome is there already: a late "running" does not undo it
            else:
                await api.call("PATCH", f"{repo}/issues/comments/{found[0]}", json={"body": body})
            if origin.get("review_comment") and origin.get("comment_id") and _ended(session):
                reply = f"{channel.MARKER} -->\n{self.describe(session)}"
                path = f"{repo}/pulls/{number}/comments/{origin['comment_id']}/replies"
                await api.call("POST", path, json={"body": reply})

    async def _find(self, api: GitHubApi, repo: str, number: int, marker: str) -> int | None:
        found = await self._find_comment(api, repo, number, marker)
        return found[0] if found else None

    async def _find_comment(
        self, api: GitHubApi, repo: str, number: int, marker: str
    ) -> tuple[int, str] | None:
        """The id and body of the comment that starts with ``marker``."""
        page = 1
        while True:
            params = {"per_page": "100", "page": str(page)}
            data = await api.call("GET", f"{repo}/issues/{number}/comments", params=params)
            if not isinstance(data, list):
                return None
            for item in data:
                text = str(item.get("body") or "") if isinstance(item, dict) else ""
                if text.startswith(marker):
                    return int(item["id"]), text
            if len(data) < 100:
                return None
            page += 1

    def describe(self, session: dict[str, Any]) -> str:
        """The status comment's text: what state the session is in, where to see it, and once
        it ended the outcome as Changed / Verified / Uncertain / Next."""
        status = str(session.get("status") or "queued")
        lines = [f"{_ICONS.get(status, '•')} TeleCoder session `{session['id']}`: **{status}**"]
        if self.settings.public_url:
            url = f"{self.settings.public_url.rstrip('/')}/sessions/{session['id']}"
            lines.append(f"Follow it on the dashboard: {url}")
        if session.get("status") == "blocked" and session.get("question"):
            lines.append(f"**TeleCoder needs your input:** {session['question']}")
            lines.append(
                f'Answer with `telecoder answer {session["id"]} "…"`, on the dashboard, or '
                "`POST /api/sessions/{id}/answer`: the agent resumes where it stopped."
            )
        if not _ended(session):
            return "\n\n".join(lines)
        result = session.get("result") or {}
        found = session.get("outcome") or outcomes.summarize(
            status=status, result=result, error=session.get("error")
        )
        lines.append(outcomes.markdown(found))
        said = str(result.get("text") or "").strip()
        if said:
            clipped = said if len(said) <= 3000 else said[:2999] + "…"
            lines.append(f"**The agent said:**\n\n{clipped}")
        return "\n\n".join(lines)

    # --- the running sessions, announced --------------------------------------------------------

    async def watch(self, store: Store, stop: asyncio.Event, every: float = 1.0) -> None:
        """Edit the status comment of each GitHub session that starts running (queued →
        running). In memory: after a restart the running ones are announced again, which
        edits the comment to what it already says."""
        announced: set[str] = set()
        while not stop.is_set():
            try:
                page = await store.sessions.list(status=SessionStatus.RUNNING, limit=200)
                for found in page.sessions:
                    origin = found.origin or {}
                    if found.id in announced or origin.get("channel") != "github":
                        continue
                    announced.add(found.id)
                    await self.status(found.to_dict())
                running = {found.id for found in page.sessions}
                announced &= running
            except ForgeError as e:
                log.warning("GitHub: a running status failed: %s", e.message)
            except Exception:
                log.exception("GitHub: announcing running sessions failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    # --- the outbox subscriber ----------------------------------------------------------------

    async def subscriber(self, event: dict[str, Any]) -> None:
        """Given every notification: the outcome of a session from GitHub, on GitHub."""
        session = (event.get("data") or {}).get("session") or {}
        if (session.get("origin") or {}).get("channel") != "github":
            return
        await self.status(session)


def _ended(session: dict[str, Any]) -> bool:
    return session.get("status") not in (None, "queued", "running", "blocked")


def _repo(full_name: str) -> str:
    owner, _, name = full_name.partition("/")
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
