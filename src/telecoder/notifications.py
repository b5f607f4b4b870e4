"""Notifications: a session started anywhere tells someone on Slack or Telegram how it went.

A session's ``notify`` holds targets ``channel:who`` (``slack:U123``, ``slack:#deploys``,
``telegram:456``). They are given as ``--notify`` on ``telecoder run``, ``notify`` in
``POST /api/sessions`` or the dashboard's toggle, and checked at intake (:func:`targets`): the
channel must be configured, and ``@me`` is resolved there — from the CLI or the API through
``TELECODER_NOTIFY_ME`` (``slack:U123,telegram:456``: the operator's own ids), from a channel
as the sender. When the session finishes, fails or needs input (the outbox's ``NotifyEvent``),
each target's channel writes a short message (:func:`message`) with the outcome or the
question and a link: ``channel.say(await channel.address(who), text)``, the channel being
:class:`telecoder.protocols.Notifying`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from telecoder.errors import BadInput, TeleCoderError
from telecoder.protocols import Channel, Notifying

log = logging.getLogger(__name__)

ME = "@me"
MAX_TARGETS = 10
_ICONS = {"finished": "✅", "failed": "❌", "needs_input": "❓"}


def me_of(setting: str | None) -> dict[str, str]:
    """``TELECODER_NOTIFY_ME`` (``slack:U123,telegram:456``) as {channel: id}."""
    found: dict[str, str] = {}
    for part in (setting or "").split(","):
        name, _, who = part.strip().partition(":")
        if name.strip() and who.strip():
            found[name.strip().lower()] = who.strip()
    return found


def targets(
    given: Sequence[str],
    *,
    known: Collection[str],
    me: Mapping[str, str],
) -> tuple[str, ...]:
    """The notify targets ``given``, checked and with ``@me`` resolved; ``BadInput`` names
    the known channels when one is not configured."""
    found: list[str] = []
    for raw in given:
        name, colon, who = raw.strip().partition(":")
        name, who = name.strip().lower(), who.strip()
        if not colon or not name or not who:
            raise BadInput(f"notify target {raw!r} is not channel:who (e.g. slack:@me)")
        if name not in known:
            listed = ", ".join(sorted(known)) or "none is configured"
            raise BadInput(f"cannot notify on {name!r}: not a configured channel (known: {listed})")
        if who == ME:
            if name not in me:
                raise BadInput(
                    f"{name}:@me needs your {name} id in TELECODER_NOTIFY_ME "
                    f"(e.g. TELECODER_NOTIFY_ME={name}:<your id>)"
                )
            who = me[name]
        if len(who) > 200 or any(c.isspace() for c in who):
            raise BadInput(f"notify target {raw!r}: {who!r} is not an id or a name")
        target = f"{name}:{who}"
        if target not in found:
            found.append(target)
    if len(found) > MAX_TARGETS:
        raise BadInput(f"at most {MAX_TARGETS} notify targets")
    return tuple(found)


def message(event: str, session: Mapping[str, Any], public_url: str | None = None) -> str:
    """The short message a target gets: what happened, the outcome or the question, a link."""
    sid = str(session.get("id"))
    status = str(session.get("status") or "")
    prompt = " ".join(str(session.get("prompt") or "").split())
    prompt = prompt if len(prompt) <= 80 else prompt[:79] + "…"
    head = {
        "finished": "finished",
        "failed": f"ended {status}",
        "needs_input": "needs your input",
    }.get(event, status)
    lines = [f"{_ICONS.get(event, '•')} TeleCoder session {sid} {head}: {prompt}"]
    result = session.get("result") or {}
    if event == "needs_input":
        question = session.get("question")
        lines.append(f"It asks: {question}" if question else "It waits for a message.")
        lines.append(f'Answer: telecoder answer {sid} "…"')
    elif event == "finished":
        if result.get("pr_url"):
            lines.append(f"Pull request: {result['pr_url']}")
        elif result.get("branch"):
            lines.append(f"Pushed {result['branch']}")
        elif result.get("text"):
            said = str(result["text"]).strip()
            lines.append(said if len(said) <= 500 else said[:499] + "…")
    elif session.get("error"):
        error = str(session["error"])
        lines.append(error if len(error) <= 500 else error[:499] + "…")
    if public_url:
        lines.append(f"{public_url.rstrip('/')}/sessions/{sid}")
    return "\n".join(lines)


async def send(
    channels: Mapping[str, Channel], event: str, session: Mapping[str, Any], public_url: str | None
) -> int:
    """Tell each of the session's notify targets; how many were told. A target whose channel
    is gone or failed is logged and skipped: the others are still told."""
    told = 0
    text = message(event, session, public_url)
    for target in session.get("notify") or ():
        name, _, who = str(target).partition(":")
        channel = channels.get(name)
        if channel is None or not isinstance(channel, Notifying):
            log.warning("session %s: cannot notify %s (no such channel)", session.get("id"), name)
            continue
        try:
            await channel.say(await channel.address(who), text)
        except TeleCoderError as e:
            log.warning("session %s: notifying %s failed: %s", session.get("id"), target, e.message)
            continue
        except Exception:  # one target's failure must not cost the others their message
            log.exception("session %s: notifying %s failed", session.get("id"), target)
            continue
        told += 1
    return told
