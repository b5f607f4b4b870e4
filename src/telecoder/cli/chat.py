"""``telecoder send``: a message to a chat session, whose agent continues where it stopped;
``telecoder answer``: the answer to a session that asked a question (see ``questions``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from telecoder import chat
from telecoder.assemble import build_worker
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.output import Exit, out, print_json
from telecoder.cli.run import execute_here
from telecoder.store import Store


def send(
    session_id: Annotated[str, typer.Argument(help="The chat session's id (or a unique prefix).")],
    message: Annotated[str, typer.Argument(help="What to tell the agent.")],
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Queue the turn for a worker; print the id.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the session as one JSON object at the end.")
    ] = False,
) -> None:
    """Send a chat session a message: its agent resumes in the same worktree."""
    raise typer.Exit(run_async(_turn(session_id, message, chat.send, detach, as_json)))


def answer(
    session_id: Annotated[str, typer.Argument(help="The blocked session's id (or a prefix).")],
    text: Annotated[str, typer.Argument(help="Your answer to its question.")],
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Queue the turn for a worker; print the id.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the session as one JSON object at the end.")
    ] = False,
    server: ServerOption = None,
) -> None:
    """Answer a blocked session's question: its agent resumes with it in the same worktree.

    With --server the answer is queued for the server's workers (follow it with
    `telecoder logs -f ID`).
    """
    if server:
        from telecoder.cli.remote import connect

        async def remote() -> Exit:
            async with connect(server) as api:
                sent = await api.answer(session_id, text)
                if as_json:
                    print_json(await api.get(str(sent["session_id"])))
                else:
                    out.print(sent["session_id"])
            return Exit.OK

        raise typer.Exit(run_async(remote()))
    raise typer.Exit(run_async(_turn(session_id, text, chat.answer, detach, as_json)))


async def _turn(
    session_id: str,
    text: str,
    deliver: Callable[[Store, str, str], Awaitable[chat.Sent]],
    detach: bool,
    as_json: bool,
) -> Exit:
    """Give the session ``text`` (a message, an answer), then run its turn here unless
    ``detach``: a worker of this process claims it and follows it to its end."""
    settings = load_settings()
    async with opened(settings) as store:
        session = await store.sessions.resolve(session_id)
        after = await store.events.last_seq(session.id)
        session = (await deliver(store, session.id, text)).session
        if detach:
            if as_json:
                print_json(session.to_dict())
            else:
                out.print(session.id)
            return Exit.OK
        worker = build_worker(settings, store, one_shot=True)
        claimed = await store.queue.claim(worker.id, only=session.id)
        return await execute_here(store, worker, claimed, session.id, after=after, as_json=as_json)
