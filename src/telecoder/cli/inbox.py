"""``telecoder inbox``: durable messages between agents, with leases and read cursors.

Every command names its caller with ``--as AGENT`` (or ``TELECODER_AGENT``) and prints the
message JSON (``Message.to_dict``, the API's shape) with ``--json``. Errors are the CLI's own:
with ``--json`` one ``{"error": {"code", "message"}}`` object (see ``cli.main``). With
``--server`` the same commands talk to a TeleCoder server's ``/api/inbox``.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.inbox_backends import InboxBackend, Json, LocalInbox, RemoteInbox
from telecoder.cli.output import err, out, print_json, print_json_line, short
from telecoder.domain import MessageStatus
from telecoder.errors import BadInput, TimedOut
from telecoder.store.inbox import MAX_ARTIFACT

T = TypeVar("T")

app = typer.Typer(
    help="The inbox: durable messages between agents (claims with leases, replies, waits).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="TELECODER_AGENT",
        help="Who you are: the agent's name (or TELECODER_AGENT).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
IdArg = Annotated[
    int, typer.Argument(help="The message's id.", min=1, metavar="ID", show_default=False)
]
LeaseOption = Annotated[
    float, typer.Option("--lease", help="Hold it this many seconds.", min=0.001, max=86_400)
]
NoteOption = Annotated[str | None, typer.Option("--note", help="Why (kept on the message).")]
BodyOption = Annotated[str | None, typer.Option("--body", help="The text.", show_default=False)]
BodyFileOption = Annotated[
    Path | None,
    typer.Option("--body-file", help="Read the text from a file (- : stdin).", show_default=False),
]
ArtifactOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--artifact",
        help="A file to send with it, stored with its SHA-256 (repeatable).",
        show_default=False,
    ),
]
LimitOption = Annotated[int, typer.Option("--limit", help="At most this many.", min=1, max=1000)]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Give up after this many seconds.", min=0, max=86_400)
]


# --- plumbing ---------------------------------------------------------------------------------


def _me(agent: str | None) -> str:
    if agent is None or not agent.strip():
        raise BadInput("who are you? give --as AGENT or set TELECODER_AGENT")
    return agent


@contextlib.asynccontextmanager
async def _backend(server: str | None) -> AsyncIterator[InboxBackend]:
    if server:
        from telecoder.cli.remote import connect

        async with connect(server) as api:
            yield RemoteInbox(api)
        return
    async with opened(load_settings()) as store:
        yield LocalInbox(store.inbox)


def _call(server: str | None, action: Callable[[InboxBackend], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _backend(server) as inbox:
            return await action(inbox)

    return run_async(go())


def _body(body: str | None, body_file: Path | None) -> str:
    if (body is None) == (body_file is None):
        raise BadInput("give the text as --body TEXT or --body-file PATH (one of them)")
    if body is not None:
        return body
    assert body_file is not None
    try:
        if str(body_file) == "-":
            return sys.stdin.read()
        return body_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {body_file}: {e}") from None


def _artifacts(paths: list[Path] | None) -> list[tuple[str, bytes]]:
    found = []
    for path in paths or []:
        try:
            size = path.stat().st_size
            if size > MAX_ARTIFACT:
                raise BadInput(f"artifact {path} is {size} bytes; at most {MAX_ARTIFACT}")
            found.append((path.name, path.read_bytes()))
        except OSError as e:
            raise BadInput(f"cannot read artifact {path}: {e.strerror or e}") from None
    return found


def _when(value: Any) -> str:
    return str(value).replace("T", " ")[:19] if value else "-"


def _line(m: Json) -> str:
    """``#12 open lead → w1 [th_…] message: the body``"""
    to = m["to"] or "(thread)"
    status = m["status"]
    if m.get("claimed_by"):
        status += f" by {m['claimed_by']} until {_when(m['lease_until'])}"
    kind = "" if m["kind"] == "message" else f"{m['kind']} to #{m['reply_to']}: "
    files = f" (+{len(m['artifacts'])} files)" if m.get("artifacts") else ""
    text = f"#{m['id']} {status} {m['from']} → {to} [{m['thread']}] {kind}{short(m['body'], 80)}"
    return escape(text + files)


def _print(message: Json, as_json: bool) -> None:
    if as_json:
        print_json(message)
    else:
        out.print(_line(message))


def _print_all(messages: list[Json], as_json: bool, *, none: str) -> None:
    if as_json:
        print_json(messages)
    elif not messages:
        err.print(none)
    for m in [] if as_json else messages:
        out.print(_line(m))


def _status(value: str | None) -> MessageStatus | None:
    if value is None:
        return None
    try:
        return MessageStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in MessageStatus)
        raise BadInput(f"unknown status {value!r} (known: {known})") from None


# --- commands ---------------------------------------------------------------------------------


@app.command("send")
def send(
    to: Annotated[str | None, typer.Option("--to", help="The agent it is for.")] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", help="The thread it belongs to (default: a new one).")
    ] = None,
    body: BodyOption = None,
    body_file: BodyFileOption = None,
    artifact: ArtifactOption = None,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Send a message to an agent (--to) or a thread (--thread); prints it."""
    sender = _me(agent)
    if to is None and thread is None:
        raise BadInput("say where it goes: --to AGENT or --thread THREAD")
    text = _body(body, body_file)
    files = _artifacts(artifact)
    sent = _call(
        server,
        lambda inbox: inbox.send(
            sender=sender, body=text, recipient=to, thread=thread, artifacts=files
        ),
    )
    _print(sent, as_json)


@app.command("fetch")
def fetch(
    limit: Annotated[
        int, typer.Option("--limit", help="At most this many.", min=1, max=1000)
    ] = 100,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """The messages to you that you have not seen, oldest first; seen from now on."""
    me = _me(agent)
    found = _call(server, lambda inbox: inbox.fetch(me, limit=limit))
    _print_all(found, as_json, none="no new messages")


@app.command("claim")
def claim(
    message_id: IdArg,
    lease: LeaseOption = 300,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Hold a message for --lease seconds (exit 4 when another agent holds it)."""
    me = _me(agent)
    _print(_call(server, lambda inbox: inbox.claim(message_id, me, lease=lease)), as_json)


@app.command("renew")
def renew(
    message_id: IdArg,
    lease: LeaseOption = 300,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Extend your claim by --lease seconds from now (exit 9 when it expired or was taken)."""
    me = _me(agent)
    _print(_call(server, lambda inbox: inbox.renew(message_id, me, lease=lease)), as_json)


@app.command("update")
def update(
    message_id: IdArg,
    body: Annotated[str, typer.Option("--body", help="Your progress.", show_default=False)],
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Record your progress on a message you hold (exit 9 when your claim is gone)."""
    me = _me(agent)
    _print(_call(server, lambda inbox: inbox.update(message_id, me, body)), as_json)


@app.command("reply")
def reply(
    message_id: IdArg,
    body: BodyOption = None,
    body_file: BodyFileOption = None,
    artifact: ArtifactOption = None,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Reply to a message, in its thread, to its sender; prints the reply."""
    me = _me(agent)
    text = _body(body, body_file)
    files = _artifacts(artifact)
    sent = _call(
        server, lambda inbox: inbox.reply(message_id, sender=me, body=text, artifacts=files)
    )
    _print(sent, as_json)


def _finish(
    message_id: int,
    status: MessageStatus,
    note: str | None,
    agent: str | None,
    as_json: bool,
    server: str | None,
) -> None:
    me = _me(agent)
    _print(_call(server, lambda inbox: inbox.finish(message_id, me, status, note)), as_json)


@app.command("done")
def done(
    message_id: IdArg,
    note: NoteOption = None,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """End a message done (yours to say while you hold it)."""
    _finish(message_id, MessageStatus.DONE, note, agent, as_json, server)


@app.command("fail")
def fail(
    message_id: IdArg,
    note: NoteOption = None,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """End a message failed (yours to say while you hold it)."""
    _finish(message_id, MessageStatus.FAILED, note, agent, as_json, server)


@app.command("cancel")
def cancel(
    message_id: IdArg,
    note: NoteOption = None,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Cancel a message that has not ended."""
    _finish(message_id, MessageStatus.CANCELLED, note, agent, as_json, server)


@app.command("list")
def list_messages(
    thread: Annotated[str | None, typer.Option("--thread", help="Only this thread.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="open, claimed, done, failed or cancelled.")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Everyone's messages, not only yours.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", help="At most this many.", min=1, max=1000)
    ] = 100,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Messages to or from you (--all: anyone's; --thread: that thread's), oldest first."""
    wanted = _status(status)
    who = None if every or thread is not None else _me(agent)
    found = _call(
        server,
        lambda inbox: inbox.list(agent=who, thread=thread, status=wanted, after=0, limit=limit),
    )
    _print_all(found, as_json, none="no messages")


@app.command("show")
def show(
    message_id: IdArg,
    artifact: Annotated[
        str | None, typer.Option("--artifact", help="Save this artifact (by name) instead.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Where to save the artifact.")
    ] = None,
    agent: AsOption = None,  # anyone may look: accepted like every command's, not needed
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """One message; with --artifact NAME --output PATH, save an artifact of it (checksum
    verified)."""
    if artifact is None:
        _print_full(_call(server, lambda inbox: inbox.get(message_id)), as_json)
        return
    if output is None:
        raise BadInput("--artifact needs --output PATH (where to save it)")

    async def fetch_artifact(inbox: InboxBackend) -> tuple[Json, bytes]:
        return await inbox.get(message_id), await inbox.artifact(message_id, artifact)

    message, content = _call(server, fetch_artifact)
    record = next((a for a in message["artifacts"] if a["name"] == artifact), None)
    digest = hashlib.sha256(content).hexdigest()
    if record is None or record["sha256"] != digest or record["size"] != len(content):
        raise BadInput(f"artifact {artifact!r} of message {message_id} fails its checksum")
    try:
        output.write_bytes(content)
    except OSError as e:
        raise BadInput(f"cannot write {output}: {e.strerror or e}") from None
    saved = {**record, "message_id": message_id, "path": str(output.absolute())}
    if as_json:
        print_json(saved)
    else:
        err.print(f"saved {artifact} ({len(content)} bytes, sha256 {digest[:12]}) to {output}")


def _print_full(m: Json, as_json: bool) -> None:
    if as_json:
        print_json(m)
        return
    rows = [(k, m[k]) for k in ("id", "thread", "kind", "from", "to", "reply_to", "status")]
    rows += [
        (k, m[k])
        for k in ("claimed_by", "lease_until", "progress", "note", "created_at", "updated_at")
        if m.get(k) is not None
    ]
    rows += [
        ("artifact", f"{a['name']} ({a['size']} bytes, {a['sha256']})") for a in m["artifacts"]
    ]
    for key, value in rows:
        out.print(f"[bold]{key.ljust(11)}[/] {escape(str(value))}")
    out.print(escape(m["body"]), highlight=False)


@app.command("watch")
def watch(
    thread: Annotated[str | None, typer.Option("--thread", help="Only this thread.")] = None,
    since: Annotated[
        int | None,
        typer.Option("--since", help="Start after this message id (default: from now).", min=0),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Stop after this many seconds (exit 10).", min=0),
    ] = None,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Stream new messages to or from you (--thread: in that thread) as they land; --json:
    one JSON object a line."""
    who = None if thread is not None else _me(agent)
    deadline = None if timeout is None else time.monotonic() + timeout

    async def stream(inbox: InboxBackend) -> None:
        after = since if since is not None else await inbox.latest()
        while True:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimedOut(f"watched for {timeout:g} s")
            found = await inbox.next_messages(agent=who, thread=thread, after=after, seconds=left)
            for m in found:
                if as_json:
                    print_json_line(m)
                else:
                    out.print(_line(m))
                after = max(after, int(m["id"]))

    _call(server, stream)


@app.command("wait-reply")
def wait_reply(
    message_id: Annotated[
        int | None,
        typer.Argument(help="Only replies to this message.", min=1, show_default=False),
    ] = None,
    timeout: TimeoutOption = 300,
    agent: AsOption = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
) -> None:
    """Block until a reply (or answer) to you that you have not seen lands; prints the replies
    (exit 10 after --timeout seconds without one)."""
    me = _me(agent)
    found = _call(
        server, lambda inbox: inbox.wait_replies(me, reply_to=message_id, seconds=timeout)
    )
    if as_json:
        print_json(found)
        return
    for m in found:
        out.print(_line(m))
        out.print(escape(m["body"]), highlight=False)
