"""Chat sessions: talk to an agent that keeps its workspace between turns.

A chat (``telecoder run --mode chat``, or ``mode: chat`` over the API) runs its first turn like
a task, then waits in status ``blocked`` with its worktree and its agent's own session kept; the
branch is pushed after each turn that changed something. ``send`` records a message as an event
and puts the chat back in the queue; its next turn resumes the same agent session in the same
worktree with the messages sent since. A chat nobody writes to for ``chat_idle_seconds`` ends
``succeeded`` with its last result (a worker's side task), and its worktree is removed.

    queued → running → blocked ─send→ queued → running → blocked … ─idle→ succeeded
                                   (cancel, or a failed turn, ends it too)
"""

from __future__ import annotations

from dataclasses import dataclass

from telecoder import agentinbox
from telecoder.domain import Mode, Session, SessionStatus
from telecoder.errors import BadInput, Conflict
from telecoder.store import Store

MAX_MESSAGE = 100_000


@dataclass(frozen=True, slots=True)
class Sent:
    session: Session  # as it is now: ``queued`` when it was waiting
    seq: int  # of the message's event in the session's log


async def send(store: Store, session_id: str, text: str, *, sender: str | None = None) -> Sent:
    """Send the chat ``session_id`` a message (from ``sender``, when known).

    ``BadInput`` for an empty message; ``Conflict`` for a task session, a chat that ended, or
    one whose agent is in the middle of a turn; ``SessionNotFound``.
    """
    message = text.strip()
    if not message:
        raise BadInput("the message is empty")
    if len(message) > MAX_MESSAGE:
        raise BadInput(f"the message is longer than {MAX_MESSAGE} characters")
    session, seq = await store.sessions.add_message(session_id, message, sender=sender)
    return Sent(session, seq)


async def answer(store: Store, session_id: str, text: str, *, sender: str | None = None) -> Sent:
    """Answer the question of ``session_id`` (blocked: a task that asked, or a waiting chat):
    its agent resumes with ``text`` as the next turn's prompt, in the same worktree. A question
    its agent asked through the inbox gets ``text`` as its ``answer`` reply there as well.

    ``Conflict`` for a session that is not waiting for an answer; ``BadInput``;
    ``SessionNotFound``.
    """
    session = await store.sessions.get(session_id)
    if session.status != SessionStatus.BLOCKED:
        raise Conflict(
            f"session {session_id} is {session.status.value}: it is not waiting for an answer"
        )
    if session.question is None and session.mode != Mode.CHAT:
        raise Conflict(f"session {session_id} asks no question (it waits for {session.error})")
    sent = await send(store, session_id, text, sender=sender)
    if session.question is not None:  # asked through the inbox: the answer goes there too
        await agentinbox.record_answer(store, session, text.strip(), sender=sender)
    return sent
