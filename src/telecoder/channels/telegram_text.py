"""Telegram's updates and TeleCoder's messages, as text: who a message is for and in which
thread (``parse_update``), and what the progress message and a turn's end say.

Entity offsets count UTF-16 code units (as Telegram does), so a mention after an emoji is cut
out where it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telecoder import outcome as outcomes
from telecoder.protocols import Inbound

NAME = "telegram"
MAX_TEXT = 4096  # Telegram's limit for one message
ICONS = {
    "queued": "🕓",
    "running": "⚙️",
    "blocked": "💬",
    "succeeded": "✅",
    "failed": "❌",
    "dead": "❌",
    "cancelled": "🚫",
}


@dataclass(frozen=True, slots=True)
class Bot:
    id: int
    username: str


def parse_update(update: Mapping[str, Any], bot: Bot) -> list[Inbound]:
    """The message an update carries, if it is for TeleCoder (or may be in a thread)."""
    message = update.get("message")
    if not isinstance(message, dict) or "update_id" not in update:
        return []
    sender = message.get("from") or {}
    chat = message.get("chat") or {}
    text = message.get("text") or message.get("caption") or ""
    if not sender or sender.get("is_bot") or "id" not in chat or not text.strip():
        return []
    direct = chat.get("type") == "private"
    mentioned, text = _mentions(message, text, bot)
    replied = message.get("reply_to_message") or {}
    to_bot = bool(replied) and (replied.get("from") or {}).get("id") == bot.id
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    command = first.startswith("/") and "@" not in first  # not /cmd@another_bot
    topic = message.get("message_thread_id") if message.get("is_topic_message") else None
    addressed = direct or mentioned or to_bot or command
    if not addressed and not (replied or topic):
        return []  # group chatter: not for TeleCoder, and in no thread
    chat_id = int(chat["id"])
    root = f"{chat_id}/{topic}" if topic else f"{chat_id}/{message['message_id']}"
    files = _attachments(message)
    name = sender.get("username") or " ".join(
        p for p in (sender.get("first_name"), sender.get("last_name")) if p
    )
    return [
        Inbound(
            channel=NAME,
            key=str(update["update_id"]),
            thread=root,
            place=str(chat_id),
            sender=str(sender["id"]),
            sender_name=name or None,
            text=text.strip(),
            addressed=addressed,
            direct=direct,
            attachments=files,
            reply={
                "chat_id": chat_id,
                "message_id": int(message["message_id"]),
                "topic": topic,
                "reply_to": replied.get("message_id") if replied else None,
                "chat_type": chat.get("type"),
                "username": sender.get("username"),
            },
        )
    ]


def _mentions(message: Mapping[str, Any], text: str, bot: Bot) -> tuple[bool, str]:
    """Whether the message @mentions the bot, and its text without the mention (or the
    ``@bot`` of a ``/command@bot``)."""
    entities = message.get("entities") or message.get("caption_entities") or []
    handle = f"@{bot.username}".lower()
    cuts: list[tuple[int, int]] = []
    mentioned = False
    encoded = text.encode("utf-16-le")  # entity offsets count UTF-16 code units

    def part(offset: int, length: int) -> str:
        return encoded[2 * offset : 2 * (offset + length)].decode("utf-16-le", "replace")

    for entity in entities:
        kind = entity.get("type")
        offset, length = int(entity.get("offset", 0)), int(entity.get("length", 0))
        said = part(offset, length)
        by_name = kind == "mention" and bool(bot.username) and said.lower() == handle
        if by_name or (kind == "text_mention" and (entity.get("user") or {}).get("id") == bot.id):
            mentioned = True
            cuts.append((offset, length))
        elif kind == "bot_command" and bot.username and said.lower().endswith(handle):
            mentioned = True
            cuts.append((offset + length - len(handle), len(handle)))
    for offset, length in sorted(cuts, reverse=True):
        encoded = encoded[: 2 * offset] + encoded[2 * (offset + length) :]
    return mentioned, encoded.decode("utf-16-le", "replace").strip()


def _attachments(message: Mapping[str, Any]) -> tuple[str, ...]:
    document = message.get("document") or {}
    if document.get("file_name"):
        return (str(document["file_name"]),)
    return ("a photo",) if message.get("photo") else ()


def progress_text(session: Mapping[str, Any]) -> str:
    """The one progress message: status, what it does, its question, PR link, outcome."""
    status = str(session.get("status"))
    origin = session.get("origin") or {}
    repo = origin.get("repo_name") or session.get("repo")
    lines = [f"{ICONS.get(status, '•')} TeleCoder {session.get('id')} — {status}", f"repo: {repo}"]
    if status == "running" and session.get("activity"):
        lines.append(f"now: {session['activity']}")
    if status == "blocked" and session.get("question"):
        lines.append(f"question: {session['question']}")
    result = session.get("result") or {}
    if result.get("pr_url"):
        lines.append(f"PR: {result['pr_url']}")
    outcome = session.get("outcome")
    if outcome:
        lines.append("")
        lines.extend(f"{label}: {text}" for label, text in outcomes.lines(outcome))
    elif session.get("error"):
        lines.append(f"error: {session['error']}")
    return "\n".join(lines)


def final_text(session: Mapping[str, Any]) -> str:
    """The reply that notifies the user that a turn ended."""
    status = str(session.get("status"))
    result = session.get("result") or {}
    head = {
        "succeeded": "Done",
        "blocked": "Your turn: reply to this message to continue",
        "cancelled": "Cancelled",
    }.get(status, "It failed")
    lines = [f"{ICONS.get(status, '•')} {head} ({session.get('id')})."]
    if status == "blocked" and session.get("question"):
        lines.append(str(session["question"]))
    if result.get("pr_url"):
        lines.append(f"PR: {result['pr_url']}")
    outcome = session.get("outcome")
    if outcome:
        lines.extend(f"{label}: {text}" for label, text in outcomes.lines(outcome))
    elif session.get("error"):
        lines.append(str(session["error"]))
    return "\n".join(lines)


def cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
