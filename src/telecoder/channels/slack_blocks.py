"""What TeleCoder says on Slack, as Block Kit: a session's status message and its outcome.

Pure functions of the session's JSON (``Session.to_dict()``, with ``activity`` while it runs):
the status message (a status line, what the agent is doing, its question, the pull request, the
outcome, and the Cancel / Retry buttons) and the message that tells the thread a turn or the
session ended. The buttons carry the session's id; ``/api/channels/slack/actions`` acts on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from telecoder import outcome as outcomes

CANCEL = "telecoder_cancel"
RETRY = "telecoder_retry"
STATUS_EVENT = "telecoder_status"  # the message metadata of a session's status message
OUTCOME_EVENT = "telecoder_outcome"  # … of the message that tells a turn's or the end's outcome
SECTION_CHARS = 2900  # Slack refuses a section's text past 3000 characters
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
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


def ended(session: Mapping[str, Any]) -> bool:
    return str(session.get("status")) in ENDED


def escape(text: str) -> str:
    """Slack's three escapes: what a user or an agent wrote cannot mention or link anybody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(markdown: str) -> str:
    """GitHub-flavoured bold (``**x**``) as Slack's (``*x*``); the rest is escaped."""
    return _BOLD.sub(r"*\1*", escape(markdown))


def clip(text: str, limit: int = SECTION_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_line(session: Mapping[str, Any]) -> str:
    status = str(session.get("status") or "queued")
    icon = _ICONS.get(status, "•")
    origin = session.get("origin") or {}
    repo = origin.get("repo_name") or session.get("repo") or "?"
    words = {"queued": "queued", "running": "started", "blocked": "waiting for you"}
    return f"{icon} TeleCoder session `{session.get('id')}` on `{escape(str(repo))}`: " + (
        f"*{words.get(status, status)}*"
    )


def pr_url(session: Mapping[str, Any]) -> str | None:
    result = session.get("result") or {}
    url = result.get("pr_url") if isinstance(result, Mapping) else None
    return str(url) if url else None


def outcome_text(session: Mapping[str, Any]) -> str | None:
    """The outcome as Slack mrkdwn, once a turn or the session ended (None before)."""
    status = str(session.get("status") or "")
    result = session.get("result")
    if status not in ENDED and not (status == "blocked" and result):
        return None
    found = session.get("outcome") or outcomes.summarize(
        status=status, result=result, error=session.get("error")
    )
    return mrkdwn(outcomes.markdown(found)).replace("\n\n", "\n")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}}


def _button(text: str, action: str, session_id: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action,
        "value": session_id,
    }
    if style:
        button["style"] = style
    return button


def status_blocks(session: Mapping[str, Any], public_url: str | None = None) -> list[Any]:
    """The status message: where the session stands, with the buttons that fit."""
    session_id = str(session.get("id"))
    status = str(session.get("status") or "queued")
    line = status_line(session)
    if public_url:
        line += f"  <{public_url.rstrip('/')}/sessions/{session_id}|dashboard>"
    blocks: list[Any] = [_section(line)]
    activity = session.get("activity")
    if status == "running" and activity:
        text = f"Now: {escape(str(activity))}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text)}]})
    question = session.get("question")
    if status == "blocked" and question:
        blocks.append(_section(f"*Question:* {escape(str(question))}\nAnswer in this thread."))
    url = pr_url(session)
    if url:
        blocks.append(_section(f"*Pull request:* <{url}>"))
    found = outcome_text(session)
    if found:
        blocks.append(_section(found))
    if status in ENDED:
        buttons = [_button("Retry", RETRY, session_id)]
    else:
        buttons = [_button("Cancel", CANCEL, session_id, "danger")]
    blocks.append({"type": "actions", "elements": buttons})
    return blocks


def outcome_blocks(session: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The message that tells the thread a turn or the session ended: what the agent said, the
    pull request and the outcome (its text is the notification's)."""
    status = str(session.get("status"))
    result = session.get("result") or {}
    said = str(result.get("text") or "").strip() if isinstance(result, Mapping) else ""
    if status == "blocked":
        head = f"💬 Session `{session.get('id')}` answered: reply in this thread to go on."
        if session.get("question"):
            head = f"💬 Session `{session.get('id')}` asks: {escape(str(session['question']))}"
    else:
        head = status_line(session)
    blocks: list[Any] = [_section(head)]
    if said:
        blocks.append(_section(escape(said)))
    url = pr_url(session)
    found = outcome_text(session)
    if found:
        blocks.append(_section(found))
    if status not in ENDED and session.get("error"):
        blocks.append(_section(f"*Error:* {escape(str(session['error']))}"))
    text = head if not url else f"{head} {url}"
    return text, blocks
