"""A session's agent in the inbox: who it is, which thread it talks in, and who its leader is.

The agent of session ``S`` is ``session:S``. A session of an ``orch`` run (its ``task_key`` set,
the leader's name in the run's ``spec["leader"]``) talks in ``orch:<run id>:<task key>`` to its
leader; any other session talks in ``session:S`` to nobody in particular (its questions are
shown as the session's question). ``place_of`` is that rule, for every module that needs it.

What the agent may do there (through the gateway's ``/inbox/v1``, ``gateway.inbox``): ``post``
a note, ``ask`` a question, read the ``answer`` to a question of its own and ``fetch`` the
messages sent to it. A question still unanswered when the agent's turn ends makes the session
``blocked`` with it (``open_question``); ``chat.answer`` resumes it and records the answer as an
``answer`` reply to the question (``record_answer``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from telecoder import questions
from telecoder.domain import Message, MessageKind, MessageStatus, RunKind, Session
from telecoder.errors import BadInput, MessageNotFound
from telecoder.store import Store
from telecoder.store.inbox import REPLIES

MAX_TEXT = 20_000  # characters of a note or a question
ANSWERED_BY = "user"  # the answer's sender when nobody is named (``telecoder answer``)
HINT = (
    "You can talk to {whom} while you work with the `telecoder-inbox` command: "
    '`telecoder-inbox ask "QUESTION"` asks a question (add `--wait SECONDS` to wait for the '
    'answer and go on), `telecoder-inbox post "NOTE"` tells them something, '
    "`telecoder-inbox messages` shows what they sent you. If you asked and got no answer, "
    "end your turn: you will be resumed with the answer."
)


@dataclass(frozen=True, slots=True)
class Place:
    agent: str  # session:<id>
    thread: str  # orch:<run>:<task> or session:<id>
    leader: str | None  # who questions go to; None: whoever watches the session


def agent_of(session_id: str) -> str:
    return f"session:{session_id}"


async def place_of(store: Store, session: Session | str) -> Place:
    """Where ``session``'s agent talks (see the module's docstring)."""
    if isinstance(session, str):
        session = await store.sessions.get(session)
    agent = agent_of(session.id)
    if session.run_id is not None and session.task_key:
        run = await store.runs.get(session.run_id)
        leader = run.spec.get("leader")
        if run.kind == RunKind.ORCH and isinstance(leader, str) and leader:
            return Place(agent, f"orch:{run.id}:{session.task_key}", leader)
    return Place(agent, agent, None)


async def told(store: Store, session: Session) -> str:
    """What to add to the first prompt of a session whose agent has the inbox tool: its
    ``hint`` when someone will see it ask (a leader, or ``questions.may_ask``); else nothing."""
    place = await place_of(store, session)
    if place.leader is None and not questions.may_ask(session):
        return ""
    return "\n\n" + hint(place)


def hint(place: Place) -> str:
    """What the agent is told about its tool (appended to its first prompt)."""
    whom = f"your leader ({place.leader})" if place.leader else "whoever gave you this task"
    return HINT.format(whom=whom)


def _text(what: str, text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"the {what} is empty")
    if len(text) > MAX_TEXT:
        raise BadInput(f"the {what} is {len(text)} characters long; at most {MAX_TEXT}")
    return text.strip()


async def post(store: Store, place: Place, body: object) -> Message:
    """A note from the agent in its thread (to its leader, when it has one)."""
    text = _text("body", body)
    return await store.inbox.send(
        sender=place.agent, body=text, recipient=place.leader, thread=place.thread
    )


async def ask(store: Store, place: Place, question: object) -> Message:
    """A question from the agent to its leader, in its thread."""
    text = _text("question", question)
    return await store.inbox.send(
        sender=place.agent,
        body=text,
        recipient=place.leader,
        thread=place.thread,
        kind=MessageKind.QUESTION,
    )


async def own_question(store: Store, place: Place, message_id: int) -> Message:
    """The agent's own question ``message_id``; ``MessageNotFound`` for any other message (the
    agent learns nothing of messages that are not its own)."""
    try:
        message = await store.inbox.get(message_id)
    except MessageNotFound:
        message = None
    if message is None or message.sender != place.agent or message.kind != MessageKind.QUESTION:
        raise MessageNotFound(f"no question {message_id} of yours")
    return message


async def answer_of(store: Store, place: Place, question: Message) -> Message | None:
    """The first reply or answer to ``question`` (marked as shown to the agent), or None."""
    fresh = await store.inbox.unread_replies(place.agent, reply_to=question.id)
    if fresh:
        return fresh[0]
    return await _answer(store, question)


async def _answer(store: Store, question: Message) -> Message | None:
    after = question.id
    while True:
        page = await store.inbox.list(thread=question.thread, after=after, limit=100)
        for message in page:
            if message.reply_to == question.id and message.kind in REPLIES:
                return message
        if len(page) < 100:
            return None
        after = page[-1].id


async def open_question(store: Store, asked: Iterable[int]) -> str | None:
    """The last of the questions ``asked`` (ids, in the order asked) still waiting for an
    answer; None when each was answered (or ended)."""
    for message_id in reversed(list(asked)):
        question = await store.inbox.get(message_id)
        if question.status.terminal:
            continue
        if await _answer(store, question) is None:
            return questions.clip(question.body)
    return None


async def record_answer(
    store: Store, session: Session, text: str, *, sender: str | None = None
) -> Message | None:
    """Record ``text`` as the ``answer`` to the session agent's last open question, unless
    someone (the leader, through ``orch answer``) answered it already; None when nothing was
    waiting for it."""
    place = await place_of(store, session)
    after = 0
    last: Message | None = None
    while True:
        page = await store.inbox.list(agent=place.agent, after=after, limit=100)
        for message in page:
            if message.sender == place.agent and message.kind == MessageKind.QUESTION:
                last = message
        if len(page) < 100:
            break
        after = page[-1].id
    if last is None or last.status in (MessageStatus.CANCELLED, MessageStatus.FAILED):
        return None
    if session.question != questions.clip(last.body):
        return None  # it waits for another question (its final message's ``QUESTION:``)
    if await _answer(store, last) is not None:
        return None
    who = sender or place.leader or ANSWERED_BY
    return await store.inbox.reply(last.id, sender=who, body=text, kind=MessageKind.ANSWER)
