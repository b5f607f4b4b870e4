"""Asking a human for help: when a session waits ``blocked`` with a ``question``.

A session stops and asks (status ``blocked``, ``question`` set) when:

- **the agent asks.** Its final message holds a line that starts ``QUESTION:`` (the explicit
  marker, honoured for every session, with or without a diff: the diff is pushed first); or,
  for a session someone will see asking (:func:`may_ask`), no diff was made and the final
  message *ends* with a question put to the user (its last line ends with ``?`` and speaks to
  them: "you", "should I", "shall I", "which", "do you want" …). The detector is conservative:
  a question somewhere in the middle of an answer, or an answer that ends with a rhetorical
  question to nobody, is an answer.
- **the checks keep failing** after ``max_revisions``, for a session someone will see asking:
  the question summarises the failing checks (:func:`verify_question`). Others fail as before.
- **its budget is spent** (``budgeting``): the question is the budget message.

The answer (``telecoder answer``, ``POST /api/sessions/{id}/answer``, the dashboard, a reply in
its thread) is the next turn's prompt: the *same* agent session resumes in the same worktree.

Agents are told how to ask (:data:`HINT`, after the first prompt of a session that may ask).
"""

from __future__ import annotations

import re

from telecoder.domain import Session

MARKER = "QUESTION:"
MAX_QUESTION = 2_000
HINT = (
    "If you cannot go on without a decision or information from the person who asked, do not "
    "guess: end your final message with a line that starts with `QUESTION:` followed by your "
    "question; you will be resumed with their answer."
)

_MARKED = re.compile(
    r"^\s*(?:[*_>#-]+\s*)*QUESTION\s*:\s*(?:[*_]+\s*)?(?P<q>.+)", re.MULTILINE | re.DOTALL
)
_TO_THE_USER = re.compile(
    r"\b(you|your|should i|shall i|may i|can i|do i|which|would you|could you|"
    r"do you want|let me know|please)\b",
    re.IGNORECASE,
)


def may_ask(session: Session) -> bool:
    """Whether someone will see the session ask: it came from a channel's thread (the question
    is posted there), or someone asked to be notified."""
    origin = session.origin or {}
    return bool(session.thread or session.notify or origin.get("thread"))


def asked(text: str | None, *, changed: bool, heuristic: bool) -> str | None:
    """The question the agent's final message ``text`` asks, or None.

    ``changed``: the agent made a diff (then only the explicit marker counts). ``heuristic``:
    whether an unmarked question at the end counts (see :func:`may_ask`).
    """
    if not text or not text.strip():
        return None
    marked = _MARKED.search(text)
    if marked is not None:
        question = marked.group("q").strip()
        return clip(question) if question else None
    if changed or not heuristic:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1]
    if not last.endswith("?") or last.startswith(("```", "$", ">>>")):
        return None
    paragraph = text.strip().split("\n\n")[-1].strip()
    if not _TO_THE_USER.search(paragraph):
        return None
    return clip(paragraph)


def verify_question(summary: str) -> str:
    """What a session whose checks keep failing asks (``summary``: the failing checks)."""
    head = summary.replace("; nothing was pushed", "")
    return clip(
        f"{head}\nHow should I go on? (answer with a hint to fix it, or tell me to change "
        "approach; cancel the session to give up)"
    )


def clip(text: str) -> str:
    return text if len(text) <= MAX_QUESTION else text[: MAX_QUESTION - 1] + "…"
