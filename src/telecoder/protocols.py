"""The seams: Engine, Runtime, Forge — and the values that cross them.

An **Engine** is pure translation. ``command(task)`` says how to start the agent (argv, env, files
to write into a per-session engine home, what to send on stdin); ``parser(task)`` returns a fresh
``OutputParser`` that turns each output line into events and, at the end, an ``EngineOutcome``.
An interactive engine (ACP) answers lines with bytes to write to the agent's stdin and says when
the conversation is over; a one-shot CLI just parses.

A **Runtime** owns side effects: it starts the process in its own process group, streams its
lines, writes to its stdin, and stops the whole group (SIGTERM, grace, SIGKILL).

A **Forge** publishes a pushed branch: the ``local`` forge does nothing more, ``github`` opens or
updates the one pull request of the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from telecoder.domain import EventKind, FailureKind

Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineTask:
    """One run of an agent, as the pipeline hands it to an engine."""

    prompt: str
    workdir: Path
    home: Path  # a per-session directory the engine owns: config files, the CLI's own state
    model: str | None = None
    resume_id: str | None = None  # the agent's own session id, to continue a conversation
    env: Mapping[str, str] = field(default_factory=dict)  # what the operator passes through
    tier: str | None = None  # trivial, standard or complex (the gateway's): sizes an agent's limits


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineCommand:
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the runtime's base env
    files: Mapping[str, str] = field(default_factory=dict)  # path relative to home -> content
    stdin: bytes | None = None  # None: stdin is /dev/null; bytes: a pipe, written at start
    interactive: bool = False  # keep stdin open: the parser's replies are written to it


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent:
    """A normalised event an engine reports; the pipeline records it."""

    kind: EventKind
    data: Mapping[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Feed:
    """What an engine makes of one output line."""

    events: Sequence[AgentEvent] = ()
    reply: bytes | None = None  # written to the agent's stdin (interactive engines)
    done: bool = False  # the conversation is over: the pipeline closes stdin and stops the agent


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOutcome:
    ok: bool
    text: str | None = None  # the agent's final message
    session_id: str | None = None  # the agent's own id, for resume
    usage: Usage | None = None
    failure_kind: FailureKind | None = None
    error: str | None = None


class OutputParser(Protocol):
    def feed(self, stream: Stream, line: str) -> Feed: ...

    def finish(self, exit_code: int | None) -> EngineOutcome: ...


class Engine(Protocol):
    name: str

    def command(self, task: EngineTask) -> EngineCommand: ...

    def parser(self, task: EngineTask) -> OutputParser: ...


class Process(Protocol):
    """A running engine process."""

    @property
    def pid(self) -> int: ...

    def lines(self) -> AsyncIterator[tuple[Stream, bytes]]: ...

    async def send(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def wait(self) -> int: ...

    async def stop(self, grace: float) -> int: ...


NetworkMode = Literal["none", "model", "allowlist", "open"]
NETWORK_MODES: tuple[NetworkMode, ...] = ("none", "model", "allowlist", "open")


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A host and port a sandbox may reach through the egress proxy."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicy:
    """What a confined process may connect to (enforced outside it, by the egress proxy).

    ``none``: nothing; ``model``: the engine's model endpoints; ``allowlist``: those and the
    ``allow`` domains; ``open``: any public host. Hosts on loopback or private addresses are
    reached only when named in ``endpoints`` or ``allow``. ``endpoints`` on loopback are
    forwarded: inside, the same address and port reach them (through the proxy).
    """

    mode: NetworkMode = "model"
    endpoints: tuple[Endpoint, ...] = ()  # the model endpoints (every mode but none)
    allow: tuple[str, ...] = ()  # `host`, `*.domain` or `host:port` (allowlist and open)
    hosts: tuple[tuple[str, str], ...] = ()  # (name, address) the proxy resolves itself


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    source: Path
    target: Path
    writable: bool = False
    # Given to the sandbox's own uid even when read-only (a private directory it must read).
    owned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Confinement:
    """What a sandboxed process may see and do. A runtime without a sandbox ignores it."""

    label: str  # whose process it is (a session id): names its resources
    mounts: tuple[Mount, ...] = ()  # bound into the sandbox, later ones over earlier ones
    hidden: tuple[Path, ...] = ()  # never visible, even below a readable directory
    network: NetworkPolicy = NetworkPolicy()
    memory_bytes: int | None = None
    pids: int | None = None
    file_bytes: int | None = None  # largest file a process may write
    on_denied: Callable[[Endpoint, str], None] | None = None  # a connection refused, and why


class Runtime(Protocol):
    name: str
    confined: bool  # whether it honours a Confinement (sandbox, docker) or runs as TeleCoder

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin: bytes | None,
        interactive: bool,
        confinement: Confinement | None = None,
    ) -> Process: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    """A branch that was pushed, for the forge to turn into a pull request."""

    session_id: str
    remote_url: str
    branch: str
    base: str
    title: str
    body: str
    draft: bool = False  # a partial result: opened as a draft where the forge has drafts


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    url: str | None = None
    number: int | None = None


class Forge(Protocol):
    name: str

    def handles(self, remote_url: str) -> bool:
        """Whether ``auto`` forge selection should pick this forge for ``remote_url``."""
        ...

    async def ready(self, remote_url: str) -> None:
        """Have fresh credentials for ``remote_url`` at hand before ``git_env`` is asked (a
        GitHub App's installation token is fetched or renewed here); nothing for most forges."""
        ...

    def git_env(self, remote_url: str) -> Mapping[str, str]:
        """Environment for ``git fetch``/``git push`` to ``remote_url`` (credentials).

        Passed to git only, never to an engine, and never logged.
        """
        ...

    async def publish(self, publication: Publication) -> Published:
        """Open the session's pull request, or find and update it: never a second one."""
        ...


# --- channels ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """A message that reached TeleCoder on a channel, in a channel-neutral shape.

    ``thread`` is the conversation's key, unique within the channel (Slack ``channel/thread_ts``,
    Telegram ``chat_id/message_thread_id or the first message's id``, a Linear or Jira issue):
    the sessions it started are found by it, and a later message in it continues them.
    ``place`` is where it was said (a Slack channel, a Telegram chat, a Linear team, a Jira
    project): it names the default repository. ``reply`` is what the channel needs to answer in
    the thread; it is stored as the session's origin (with ``channel`` and ``thread``), so it
    must be JSON and hold no secret. The text was written by somebody who is not the operator:
    it is untrusted data.
    """

    channel: str  # slack, telegram, linear, jira
    key: str  # the delivery's id: the same on a redelivery (idempotency)
    thread: str
    place: str
    sender: str  # the author's id on the channel
    text: str  # what was said to TeleCoder, with the mention of it taken out
    sender_name: str | None = None
    addressed: bool = True  # a mention, a DM, a reply to TeleCoder, a ticket in the trigger state
    direct: bool = False  # a direct message (one person and TeleCoder)
    title: str | None = None  # a ticket's title
    url: str | None = None  # a link to the message or ticket
    attachments: tuple[str, ...] = ()  # names or links of files that came with it
    reply: Mapping[str, object] = field(default_factory=dict)


class Channel(Protocol):
    """Where tasks come from and replies go: verify and parse what arrives, answer in a thread.

    ``verify`` raises ``telecoder.errors.WebhookSignatureInvalid`` (a 401) for a request the
    channel did not sign (a bad signature, a stale timestamp, a wrong secret token).
    ``parse`` turns a verified payload into messages (none when it asks for nothing).
    ``say`` writes ``text`` into the thread ``origin`` names (a session's origin, or an
    Inbound's ``reply`` with ``channel`` and ``thread``). ``report`` tells the thread where a
    session stands (queued, running with its ``activity``, blocked with its question, its
    outcome), editing the one status message where the channel can.
    """

    name: str

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None: ...

    def parse(self, headers: Mapping[str, str], body: bytes) -> Sequence[Inbound]: ...

    async def say(self, origin: Mapping[str, object], text: str) -> None: ...

    async def report(self, session: Mapping[str, object]) -> None: ...


@runtime_checkable
class Listening(Protocol):
    """A channel that fetches its messages itself (Telegram's long polling, Slack's Socket
    Mode) rather than being sent them: ``listen`` hands each to ``receive`` until ``stop``."""

    async def listen(
        self, receive: Callable[[Inbound], Awaitable[object]], stop: asyncio.Event
    ) -> None: ...


@runtime_checkable
class Notifying(Protocol):
    """A channel that can write to someone outside any thread (a session's ``notify`` target):
    ``address`` turns ``who`` (a user or chat id, a channel name, as the target gives it after
    ``channel:``) into an origin that ``say`` accepts: a direct message, a chat, a channel."""

    async def address(self, who: str) -> Mapping[str, object]: ...
