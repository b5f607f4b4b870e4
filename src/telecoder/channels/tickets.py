"""What Linear and Jira share: the status comment of a session on its ticket.

Each session from a ticket has one status comment on it, written when the session is queued
and edited as it runs, waits (with its question, or for the next comment) and ends (its pull
request or branch, and the outcome as Changed / Verified / Uncertain / Next, at the end). The
comment carries a marker with the session id and the ``updated_at`` of the session it shows,
so after a restart it is found again (never a second one) and an older report that arrives
late (a "running" after the turn ended) does not overwrite a newer one. One writer per
session at a time in this process.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telecoder import outcome as outcomes
from telecoder.errors import TeleCoderError

MENTION = re.compile(r"(?<![\w@])@telecoder\b[:,]?", re.IGNORECASE)
MAX_SAID = 3000
HTTP_TIMEOUT = 30.0
ENDED = frozenset({"succeeded", "failed", "dead", "cancelled", "skipped"})
_ICONS = {
    "queued": "⏳",
    "running": "🏃",
    "blocked": "💬",
    "succeeded": "✅",
    "failed": "❌",
    "dead": "❌",
    "cancelled": "🚫",
}


class TicketError(TeleCoderError):
    """Linear or Jira refused a request, or could not be reached."""


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def mentions(text: str) -> bool:
    return MENTION.search(text) is not None


def without_mention(text: str) -> str:
    return MENTION.sub("", text).strip()


def session_link(public_url: str | None, session_id: str) -> str | None:
    return f"{public_url.rstrip('/')}/sessions/{session_id}" if public_url else None


def describe(session: Mapping[str, Any], public_url: str | None) -> str:
    """The status comment's text (markdown): where the session stands, a link to it, its
    question or how to go on, and once a turn ended what the agent said, its pull request or
    branch and the outcome."""
    status = str(session.get("status") or "queued")
    session_id = str(session.get("id"))
    parts = [f"{_ICONS.get(status, '•')} TeleCoder session `{session_id}`: **{status}**"]
    link = session_link(public_url, session_id)
    if link:
        parts.append(f"Follow it on the dashboard: {link}")
    if status == "running" and session.get("activity"):
        parts.append(f"Now: {str(session['activity'])[:200]}")
    if status == "blocked":
        question = str(session.get("question") or "").strip()
        if question:
            parts.append(f"**Question:** {question}\n\nAnswer with a comment on this issue.")
        else:
            parts.append("Comment on this issue to go on: your comment is the next turn.")
    if status not in ENDED and status != "blocked":
        return "\n\n".join(parts)
    result = session.get("result") or {}
    said = str(result.get("text") or "").strip()
    if said:
        clipped = said if len(said) <= MAX_SAID else said[: MAX_SAID - 1] + "…"
        parts.append(f"**The agent said:**\n\n{clipped}")
    if result.get("pr_url"):
        parts.append(f"**Pull request:** {result['pr_url']}")
    elif result.get("branch") and result.get("commit"):
        parts.append(f"**Branch:** `{result['branch']}`")
    found = session.get("outcome") or outcomes.summarize(
        status=status, result=result, error=session.get("error")
    )
    parts.append(outcomes.markdown(found))
    return "\n\n".join(parts)


@dataclass(slots=True)
class Written:
    comment_id: str
    stamp: str  # the updated_at of the session it shows
    text: str


class StatusComments:
    """The one status comment per session: a channel gives ``_find_status``, ``_post_status``
    and ``_edit_status`` (its API), this keeps them in order."""

    def __init__(self, public_url: str | None) -> None:
        self.public_url = public_url
        self._writing: dict[str, asyncio.Lock] = {}
        self._written: dict[str, Written] = {}

    async def report(self, session: Mapping[str, object]) -> None:
        data = dict(session)
        origin = data.get("origin")
        if not isinstance(origin, dict) or not self._ours(origin):
            return
        session_id = str(data.get("id"))
        lock = self._writing.setdefault(session_id, asyncio.Lock())
        try:
            async with lock:
                await self._report(origin, session_id, data)
        finally:
            if data.get("status") in ENDED and not lock.locked():
                self._writing.pop(session_id, None)
                self._written.pop(session_id, None)

    async def _report(self, origin: dict[str, Any], session_id: str, data: dict[str, Any]) -> None:
        stamp = str(data.get("updated_at") or "")
        text = describe(data, self.public_url)
        known = self._written.get(session_id)
        if known is None:
            found = await self._find_status(origin, session_id)
            if found is not None:
                known = Written(comment_id=found[0], stamp=found[1], text="")
        if known is not None and (known.stamp > stamp or known.text == text):
            return  # older news than the comment's, or what it says already
        if known is None:
            comment_id = await self._post_status(origin, session_id, stamp, text)
        else:
            comment_id = known.comment_id
            await self._edit_status(origin, comment_id, session_id, stamp, text)
        self._written[session_id] = Written(comment_id=comment_id, stamp=stamp, text=text)

    # --- what each channel gives ----------------------------------------------------------------

    def _ours(self, origin: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    async def _find_status(
        self, origin: Mapping[str, Any], session_id: str
    ) -> tuple[str, str] | None:
        """The id of the session's status comment and the stamp it carries."""
        raise NotImplementedError

    async def _post_status(
        self, origin: Mapping[str, Any], session_id: str, stamp: str, text: str
    ) -> str:
        raise NotImplementedError

    async def _edit_status(
        self, origin: Mapping[str, Any], comment_id: str, session_id: str, stamp: str, text: str
    ) -> None:
        raise NotImplementedError
