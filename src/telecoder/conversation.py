"""A message from a channel, carried through: once, into its thread's session or a new one.

``receive`` is what every channel's route (and Telegram's poller) calls with a verified,
parsed ``Inbound``:

1. a delivery seen before is a duplicate (its first answer stands);
2. a message in a thread that has a session continues it: a chat waiting for a message, or a
   session blocked on a question, gets the message and runs its next turn with the *same*
   agent session; one in the middle of a turn is asked to wait; one that ended is followed by a
   new session on the same branch (its pull request is updated, not duplicated);
3. otherwise the dispatcher decides (``dispatcher.decide``): ``ignore`` makes nothing,
   ``answer`` and ``ask`` reply in the thread, ``run`` queues a chat session on the registered
   repository, linked to the thread, under (channel, delivery key) in one transaction.

``remember: …`` from a person (addressed to TeleCoder) keeps a fact or preference of theirs,
a memory with ``user=channel:id``, given to the sessions they start (``remembering``).

Sessions from channels are chats: each turn's result is reported in the thread, and a reply
there is the next turn. The text is untrusted: it reaches the agent fenced as data.
``report`` (the outbox subscriber) and ``watch`` (queued → running, and the agent's progress)
tell the thread where its session stands through the channel's ``report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telecoder import chat, goals, memory, notifications, templates
from telecoder.background import Background
from telecoder.channels.hooks import fenced
from telecoder.dispatcher import Decision, Dispatcher, decide
from telecoder.domain import EventKind, MemoryKind, Mode, Session, SessionStatus
from telecoder.errors import BadInput, Conflict, TeleCoderError
from telecoder.intake import Accepted
from telecoder.intake import Request as IntakeRequest
from telecoder.masking import Masker
from telecoder.planner import Planner
from telecoder.protocols import Channel, Inbound
from telecoder.store import Repo, Store

log = logging.getLogger(__name__)

Intake = Callable[[IntakeRequest], Awaitable[Accepted]]
MAX_TEXT = 20_000
# "template:dependency-upgrade package=lodash version=4.17.21": a named prompt (templates.py).
TEMPLATE = re.compile(r"^\s*template:\s*([a-z0-9._-]+)((?:\s+[\w.-]+=\S*)*)\s*$", re.IGNORECASE)
GOAL = re.compile(r"^\s*goal:\s*(\S.*)$", re.IGNORECASE | re.DOTALL)  # "goal: …": a goal to plan
# "remember: …": a fact or preference of the sender's, given to the sessions they start.
REMEMBER = re.compile(r"^\s*remember:\s*(\S.*)$", re.IGNORECASE | re.DOTALL)
MAX_FACT = 2_000
REMEMBERED = (
    "Noted: I'll keep that in mind in the tasks you ask for. "
    "(`telecoder memory list --user {user}` shows what I keep; `forget` removes it.)"
)
KEEP_SECONDS = 14 * 86400  # deliveries that made no session are remembered this long
PRUNE_EVERY = 3600.0
BUSY = (
    "I'm in the middle of a turn on this: send your message again once I've answered "
    "(or cancel the session)."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """What became of a message: queued, continued, duplicate, ignored, answered, asked, busy,
    goal, remembered."""

    action: str
    session_id: str | None = None
    reason: str | None = None


def thread_of(inbound: Inbound) -> str:
    return f"{inbound.channel}:{inbound.thread}"


def origin_of(inbound: Inbound) -> dict[str, Any]:
    """The session's origin: where to answer (the channel's own keys), and who asked."""
    return {
        **dict(inbound.reply),
        "channel": inbound.channel,
        "thread": inbound.thread,
        "place": inbound.place,
        "user": f"{inbound.channel}:{inbound.sender}",
        "sender_name": inbound.sender_name,
        "url": inbound.url,
        "direct": inbound.direct,
    }


def prompt_of(inbound: Inbound, text: str) -> str:
    who = inbound.sender_name or inbound.sender
    where = "a direct message" if inbound.direct else f"{inbound.place}"
    body = f"{inbound.title}\n\n{text}" if inbound.title else text
    if inbound.attachments:
        body += "\n\nAttached: " + ", ".join(inbound.attachments)
    came = f"{inbound.channel} ({where}), from {who}"
    return fenced(came, inbound.channel, body[:MAX_TEXT])


class Conversations:
    def __init__(
        self,
        store: Store,
        *,
        intake: Intake,
        dispatcher: Dispatcher,
        channels: Mapping[str, Channel],
        engines: Sequence[str],
        poke: Callable[[], None] = lambda: None,
        public_url: str | None = None,
        templates_dir: Path | None = None,
        planner: Planner | None = None,
        facts: Masker | None = None,
    ) -> None:
        self.store = store
        self.public_url = public_url  # links to sessions in notifications
        self.intake = intake
        self.dispatcher = dispatcher
        self.channels = dict(channels)
        self.engines = list(engines)
        self.poke = poke
        self.templates_dir = templates_dir  # the operator's templates (``template:NAME``)
        self.planner = planner  # plans ``goal: …`` messages (``goals``)
        # Masks ``remember: …`` facts as they are stored; None: memory is off, no facts kept.
        self.facts = facts
        self._work = Background()
        self._background = self._work.start

    async def settle(self, grace: float) -> None:
        """The replies and plans still under way: awaited up to ``grace``, then cancelled."""
        await self._work.settle(grace)

    # --- in ------------------------------------------------------------------------------------

    async def receive(self, inbound: Inbound) -> Received:
        found = await self.store.deliveries.find(inbound.channel, inbound.key)
        if found is not None:
            return Received(action="duplicate", session_id=found.id, reason="seen before")
        seen = await self.store.channel_events.seen(inbound.channel, inbound.key)
        if seen is not None:
            return Received(action="duplicate", reason=f"seen before ({seen})")
        fact = REMEMBER.match(inbound.text)
        if fact is not None and inbound.addressed and self.facts is not None:
            return await self._remember(inbound, fact.group(1), self.facts)
        previous = await self.store.sessions.in_thread(thread_of(inbound))
        if previous is not None and inbound.text.strip():
            return await self._follow_up(inbound, previous)
        repos = await self.store.repos.list()
        default = await self.store.repos.default_for(inbound.channel, inbound.place)
        wish = GOAL.match(inbound.text)
        if wish is not None and inbound.addressed and "goal" not in {r.name for r in repos}:
            return await self._goal(inbound, wish.group(1), default)
        decision = await decide(self.dispatcher, inbound, repos, default, self.engines)
        if decision.action == "run":
            return await self._run(inbound, decision, repos)
        if not inbound.addressed:  # chatter: nothing was asked of anyone, nothing to remember
            return Received(action="ignored", reason=decision.reason)
        if not await self.store.channel_events.once(inbound.channel, inbound.key, decision.action):
            return Received(action="duplicate", reason="seen before")
        if decision.action == "ignore":
            return Received(action="ignored", reason=decision.reason)
        self._say(inbound, decision.reply or "")
        action = "answered" if decision.action == "answer" else "asked"
        return Received(action=action, reason=decision.reason)

    async def _follow_up(self, inbound: Inbound, previous: Session) -> Received:
        text = inbound.text.strip()[: chat.MAX_MESSAGE]
        sender = inbound.sender_name or inbound.sender
        waits = previous.status in (SessionStatus.BLOCKED, SessionStatus.QUEUED)
        asks = previous.status == SessionStatus.BLOCKED and previous.question is not None
        if (previous.mode == Mode.CHAT or asks) and waits:
            once = (inbound.channel, inbound.key)
            try:
                session, seq = await self.store.sessions.add_message(
                    previous.id, text, sender=f"{inbound.channel}:{sender}", once=once
                )
            except Conflict as e:
                log.info("%s: a follow-up to %s was refused: %s", inbound.channel, previous.id, e)
            else:
                self.poke()
                action = "continued" if seq else "duplicate"
                return Received(action=action, session_id=session.id)
        if not previous.status.terminal:
            # Said to TeleCoder: it answers that it is busy; people talking in the thread
            # meanwhile are left alone.
            if inbound.addressed and await self.store.channel_events.once(
                inbound.channel, inbound.key, "busy"
            ):
                self._say(inbound, BUSY)
            return Received(action="busy", session_id=previous.id, reason="in a turn")
        if not inbound.addressed:
            reason = "the thread's session ended; mention TeleCoder to go on"
            return Received(action="ignored", session_id=previous.id, reason=reason)
        # The thread's session ended: a new one goes on where it stopped, on its branch.
        accepted = await self.intake(
            IntakeRequest(
                repo=previous.repo,
                prompt=prompt_of(inbound, text),
                engine=previous.engine,
                model=previous.model,
                mode=Mode.CHAT.value,
                priority=previous.priority,
                forge=previous.forge,
                origin=origin_of(inbound),
            )
        )
        new = dataclasses.replace(
            accepted.session,
            parent_id=previous.id,
            branch=previous.branch,
            base_ref=previous.base_ref,
            thread=thread_of(inbound),
            notify=previous.notify,
        )
        return await self._queue(inbound, new)

    async def _run(self, inbound: Inbound, decision: Decision, repos: Sequence[Repo]) -> Received:
        repo = next(repo for repo in repos if repo.name == decision.repo)
        model = await self.store.channel_events.preference(inbound.channel, inbound.sender, "model")
        try:
            text, named = self._templated(decision.prompt)
        except BadInput as e:  # an unknown template, a missing variable: say which, once
            if await self.store.channel_events.once(inbound.channel, inbound.key, "refused"):
                self._say(inbound, f"I could not start on this: {e.message}")
            return Received(action="refused", reason=e.message)
        accepted = await self.intake(
            IntakeRequest(
                repo=repo.url,
                prompt=prompt_of(inbound, text),
                engine=decision.engine or named or repo.engine,
                model=model,
                mode=Mode.CHAT.value,
                priority=repo.priority,
                origin={**origin_of(inbound), "repo_name": repo.name},
            )
        )
        new = dataclasses.replace(accepted.session, thread=thread_of(inbound))
        return await self._queue(inbound, new)

    async def _goal(self, inbound: Inbound, text: str, default: Repo | None) -> Received:
        """``goal: …``: planned in the background (a model may take a while), the plan said in
        the thread with how to approve it."""
        if not await self.store.channel_events.once(inbound.channel, inbound.key, "goal"):
            return Received(action="duplicate", reason="seen before")

        async def plan() -> None:
            goal = await goals.add(
                self.store,
                self.planner,
                text,
                repo=default.name if default else None,
                origin=origin_of(inbound),
            )
            self._say(inbound, goals.summary(goal))

        self._background(plan(), f"the goal from {inbound.channel}")
        return Received(action="goal", reason="planning")

    async def _remember(self, inbound: Inbound, text: str, masker: Masker) -> Received:
        """``remember: …``: a fact of the sender's (``kind=fact``, ``user=channel:id``), given
        to the sessions they start from now on (``remembering``). Untrusted like any message:
        it reaches agents framed as data."""
        if not await self.store.channel_events.once(inbound.channel, inbound.key, "remember"):
            return Received(action="duplicate", reason="seen before")
        user = str(origin_of(inbound)["user"])
        kept = await memory.remember(
            self.store, text=text[:MAX_FACT], masker=masker, user=user, kind=MemoryKind.FACT
        )
        self._say(inbound, REMEMBERED.format(user=user))
        return Received(action="remembered", reason=f"memory {kept.id}")

    def _templated(self, text: str) -> tuple[str, str | None]:
        """``template:NAME k=v …`` as the template's prompt (and the engine it names); any
        other text as it is."""
        found = TEMPLATE.match(text)
        if found is None:
            return text, None
        given = templates.parse_vars(found.group(2).split())
        return templates.render(self.templates_dir, found.group(1), given)

    async def _queue(self, inbound: Inbound, new: Any) -> Received:
        once = await self.store.deliveries.create_once(new, source=inbound.channel, key=inbound.key)
        if not once.created:
            return Received(action="duplicate", session_id=once.session.id, reason="seen before")
        self.poke()
        self._report(once.session)
        return Received(action="queued", session_id=once.session.id)

    # --- out -----------------------------------------------------------------------------------

    def _say(self, inbound: Inbound, text: str) -> None:
        channel = self.channels.get(inbound.channel)
        if channel is not None:
            origin = {**dict(inbound.reply), "channel": inbound.channel, "thread": inbound.thread}
            self._background(channel.say(origin, text), f"a reply on {inbound.channel}")

    def _report(self, session: Session) -> None:
        channel = self.channels.get((session.origin or {}).get("channel", ""))
        if channel is not None:
            self._background(channel.report(session.to_dict()), f"the report of {session.id}")

    async def subscriber(self, event: dict[str, Any]) -> None:
        """Given every notification (the outbox): a session's status on its own channel, and
        a short message to each of its ``notify`` targets (``notifications.send``)."""
        data = event.get("data") or {}
        session = data.get("session") or {}
        if session.get("notify"):
            await notifications.send(
                self.channels, str(data.get("event")), session, self.public_url
            )
        channel = self.channels.get((session.get("origin") or {}).get("channel") or "")
        if channel is not None:
            await channel.report(session)

    async def watch(self, stop: asyncio.Event, every: float = 1.0, progress: float = 10.0) -> None:
        """Report each channel session that starts running, and every ``progress`` seconds
        what its agent is doing (``activity``: its last tool call or message). In memory: after
        a restart the running ones are reported again, which says what the thread already says."""
        told: dict[str, tuple[int, float]] = {}  # session id -> (last seq told, when)
        loop = asyncio.get_running_loop()
        pruned = loop.time() - PRUNE_EVERY + 60  # first a minute after start
        while not stop.is_set():
            try:
                if loop.time() - pruned >= PRUNE_EVERY:
                    pruned = loop.time()
                    await self.store.channel_events.prune(time.time() - KEEP_SECONDS)
                page = await self.store.sessions.list(status=SessionStatus.RUNNING, limit=200)
                mine = [s for s in page.sessions if _channel(s) in self.channels]
                heads = await self.store.events.heads([s.id for s in mine]) if mine else {}
                for session in mine:
                    seq = heads[session.id].last_seq if session.id in heads else 0
                    last = told.get(session.id)
                    if last is not None and (last[0] == seq or loop.time() - last[1] < progress):
                        continue
                    told[session.id] = (seq, loop.time())
                    await self._report_running(session)
                running = {s.id for s in mine}
                told = {k: v for k, v in told.items() if k in running}
            except Exception:
                log.exception("reporting running channel sessions failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _report_running(self, session: Session) -> None:
        data = session.to_dict()
        seq = await self.store.events.last_seq(session.id)
        data["activity"] = activity(await self.store.events.list(session.id, after=seq - 50))
        channel = self.channels[(session.origin or {})["channel"]]
        try:
            await channel.report(data)
        except TeleCoderError as e:
            log.warning("the progress of %s failed: %s", session.id, e.message)


def _channel(session: Session) -> str | None:
    return (session.origin or {}).get("channel")


def activity(events: Sequence[Any]) -> str | None:
    """What the agent did last: its last tool call, else its last message, in a line."""
    for event in reversed(events):
        if event.kind == EventKind.TOOL_CALL:
            name = event.data.get("name") or event.data.get("tool") or "a tool"
            detail = event.data.get("input") or ""
            return f"{name} {str(detail)[:120]}".strip()
        if event.kind == EventKind.MESSAGE and event.data.get("role") != "user":
            return str(event.data.get("text") or "")[:160] or None
    return None
