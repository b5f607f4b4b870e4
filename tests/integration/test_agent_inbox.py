"""The agents' inbox on the gateway (``gateway.inbox``, ``agentinbox``) and the ``telecoder-inbox``
tool, on both store backends: a real gateway on loopback, real HTTP, the tool as a subprocess.

The agent in a real sandbox asking its leader is ``test_agent_inbox_agent.py``; the sandbox's
view of the inbox, ``tests/sandbox/test_escape.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telecoder import agentinbox, chat, inboxtool
from telecoder.assemble import build_worker
from telecoder.domain import MessageKind, NewRun, NewSession, RunKind, Session, SessionStatus
from telecoder.gateway import Gateway, Ticket
from telecoder.gateway.upstreams import Upstreams
from telecoder.store import Outcome, Store
from tests.integration.test_engine_shell import all_events, execute, outputs, request, tuned


def new_session(**kw: Any) -> NewSession:
    return NewSession(repo="/nowhere", prompt="p", engine="shell", **kw)


async def plain(store: Store) -> Session:
    return await store.sessions.create(new_session())


async def orch(store: Store, leader: str | None = "lead", kind: RunKind = RunKind.ORCH) -> Session:
    spec = {"leader": leader} if leader else {}
    _, [session] = await store.runs.create(
        NewRun(kind=kind, spec=spec), [new_session(task_key="t1")]
    )
    return session


class Agent:
    """One attempt's key at the gateway, and what its session was told."""

    def __init__(self, gateway: Gateway, ticket: Ticket) -> None:
        self.gateway = gateway
        self.ticket = ticket
        self.told: list[tuple[str, dict[str, Any]]] = []
        ticket.on_event = lambda kind, data: self.told.append((kind, data))
        self.http = httpx.AsyncClient(
            base_url=gateway.url + "/inbox/v1",
            headers={"authorization": f"Bearer {ticket.key}"},
            trust_env=False,
            timeout=30,
        )

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params)


@pytest.fixture
async def gateway(store: Store) -> AsyncIterator[Gateway]:
    gateway = Gateway(upstreams=Upstreams.from_environment({}), store=store, inbox_wait=3.0)
    keep = await gateway.issue(Ticket(session_id="keeps-it-running", attempt=1))
    yield gateway
    await gateway.revoke(keep)
    await gateway.close()


async def agent_of(gateway: Gateway, session: Session) -> AsyncIterator[Agent]:
    agent = Agent(gateway, await gateway.issue(Ticket(session_id=session.id, attempt=1)))
    try:
        yield agent
    finally:
        await agent.http.aclose()


@pytest.fixture
async def agent(gateway: Gateway, store: Store) -> AsyncIterator[Agent]:
    async for a in agent_of(gateway, await orch(store)):
        yield a


# --- who and where ----------------------------------------------------------------------------


async def test_an_orch_task_talks_to_its_leader_any_other_session_in_its_own_thread(store):
    task = await orch(store)
    assert await agentinbox.place_of(store, task.id) == agentinbox.Place(
        f"session:{task.id}", f"orch:{task.run_id}:t1", "lead"
    )
    for session in (
        await plain(store),
        await orch(store, None),
        await orch(store, kind=RunKind.PLAN),
    ):
        place = await agentinbox.place_of(store, session)
        assert place == agentinbox.Place(f"session:{session.id}", f"session:{session.id}", None)


async def test_agents_are_told_of_the_tool_when_someone_will_see_them_ask(store):
    assert "your leader (lead)" in await agentinbox.told(store, await orch(store))
    watched = await store.sessions.create(new_session(notify=("slack:U1",)))
    assert "whoever gave you this task" in await agentinbox.told(store, watched)
    assert await agentinbox.told(store, await plain(store)) == ""


# --- the API ----------------------------------------------------------------------------------


async def test_post_and_ask_land_in_the_sessions_thread_to_its_leader(agent: Agent, store):
    me = f"session:{agent.ticket.session_id}"
    posted = await agent.post("/post", {"body": "  halfway there  "})
    asked = await agent.post("/ask", {"question": "Which database?"})
    assert posted.status_code == asked.status_code == 201, posted.text
    thread = posted.json()["thread"]
    assert thread.startswith("orch:")
    assert thread.endswith(":t1")
    assert asked.json() == {"id": asked.json()["id"], "thread": thread, "to": "lead"}
    note, question = await store.inbox.list(thread=thread)
    assert (note.kind, note.sender, note.recipient, note.body) == (
        MessageKind.MESSAGE, me, "lead", "halfway there"
    )  # fmt: skip
    assert (question.kind, question.sender, question.recipient, question.body) == (
        MessageKind.QUESTION, me, "lead", "Which database?"
    )  # fmt: skip
    assert agent.ticket.asked == [question.id]
    [(kind, data)] = agent.told
    assert (kind, data["step"], data["message"]) == (
        "progress",
        "asked",
        "asked the leader: Which database?",
    )
    assert [m.id for m in await store.inbox.fetch("lead")] == [note.id, question.id]


async def test_the_answer_is_waited_for_and_returned_again_later(agent: Agent, store):
    asked = (await agent.post("/ask", {"question": "Which database?"})).json()

    async def leader_answers() -> None:
        await asyncio.sleep(0.5)
        await store.inbox.reply(
            asked["id"], sender="lead", body="PostgreSQL", kind=MessageKind.ANSWER
        )

    started = time.monotonic()
    waited, _ = await asyncio.gather(
        agent.get("/answer", id=asked["id"], wait=10), leader_answers()
    )
    assert 0.4 < time.monotonic() - started < 5
    answer = waited.json()["answer"]
    assert (answer["kind"], answer["from"], answer["body"]) == ("answer", "lead", "PostgreSQL")
    again = await agent.get("/answer", id=asked["id"])
    assert again.json()["answer"]["id"] == answer["id"]
    # Shown with the answer: not again among its unseen messages.
    assert (await agent.get("/messages")).json() == {"messages": []}
    assert await agentinbox.open_question(store, agent.ticket.asked) is None


async def test_a_wait_is_bounded_and_an_unanswered_question_stays_open(agent: Agent, store):
    asked = (await agent.post("/ask", {"question": "Which database?"})).json()
    started = time.monotonic()
    waited = await agent.get("/answer", id=asked["id"], wait=9999)
    assert 2.5 < time.monotonic() - started < 6  # the gateway's bound (3 s here)
    assert waited.json() == {"id": asked["id"], "answer": None}
    assert await agentinbox.open_question(store, agent.ticket.asked) == "Which database?"


async def test_messages_are_those_to_the_agent_it_has_not_seen(agent: Agent, store):
    me = f"session:{agent.ticket.session_id}"
    sent = await store.inbox.send(sender="lead", recipient=me, body="also add tests")
    await store.inbox.send(sender="lead", recipient="session:someone-else", body="not yours")
    first = (await agent.get("/messages")).json()["messages"]
    assert [(m["id"], m["body"], m["from"]) for m in first] == [(sent.id, "also add tests", "lead")]
    assert (await agent.get("/messages")).json() == {"messages": []}


async def test_the_token_reaches_nothing_of_another_session(gateway: Gateway, agent: Agent, store):
    async for other in agent_of(gateway, await plain(store)):
        theirs = (await other.post("/ask", {"question": "secret plans?"})).json()
        note = await store.inbox.send(
            sender="lead", recipient=f"session:{agent.ticket.session_id}", body="x"
        )
        for message_id in (theirs["id"], note.id, 999_999):
            refused = await agent.get("/answer", id=message_id)
            assert refused.status_code == 404, refused.text
            assert refused.json()["error"]["code"] == "not_found"
            assert "secret" not in refused.text
        await store.inbox.send(
            sender="lead", recipient=f"session:{other.ticket.session_id}", body="theirs"
        )
        mine = (await agent.get("/messages")).json()["messages"]
        assert [m["body"] for m in mine] == ["x"]
        # Nothing else of the gateway or TeleCoder answers on an inbox path.
        for path in ("/thread", "/sessions", "/v1/messages"):
            assert (await agent.get(path)).status_code == 404


async def test_unknown_and_revoked_keys_are_refused(gateway: Gateway, store):
    session = await orch(store)
    ticket = await gateway.issue(Ticket(session_id=session.id, attempt=1))
    url = gateway.url + "/inbox/v1/post"
    async with httpx.AsyncClient(trust_env=False) as http:
        for headers in (
            {},
            {"authorization": "Bearer tc-not-a-live-key"},
            {"authorization": f"Basic {ticket.key}"},
            {"x-api-key": ticket.key},
        ):
            refused = await http.post(url, json={"body": "hi"}, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["code"] == "unauthorized"
        live = {"authorization": f"Bearer {ticket.key}"}
        assert (await http.post(url, json={"body": "hi"}, headers=live)).status_code == 201
        await gateway.revoke(ticket)
        refused = await http.post(url, json={"body": "again"}, headers=live)
    assert refused.status_code == 401
    assert [m.body for m in await store.inbox.list()] == ["hi"]


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("POST", "/post", b"{not json", 400, "bad_json"),
        ("POST", "/post", b"[1, 2]", 400, "bad_json"),
        ("POST", "/post", b'{"text": "hi"}', 422, "bad_input"),
        ("POST", "/ask", b'{"question": "   "}', 422, "bad_input"),
        ("POST", "/ask", b'{"question": 7}', 422, "bad_input"),
        ("POST", "/ask", json.dumps({"question": "x" * 20_001}).encode(), 422, "bad_input"),
        ("POST", "/post", b'{"body": "' + b"x" * 70_000 + b'"}', 413, "too_large"),
        ("GET", "/post", b"", 405, "method_not_allowed"),
        ("GET", "/answer?wait=1", b"", 422, "bad_input"),
        ("GET", "/answer?id=abc", b"", 422, "bad_input"),
        ("GET", "/answer?id=1&wait=nan", b"", 422, "bad_input"),
        ("DELETE", "/messages", b"", 405, "method_not_allowed"),
        ("GET", "/nothing", b"", 404, "not_found"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    agent: Agent, store, method, path, content, status, code
):
    done = await agent.http.request(method, path, content=content)
    assert done.status_code == status, done.text
    error = done.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert await store.inbox.list() == []


# --- blocked, answered ------------------------------------------------------------------------


async def blocked_with(store: Store, session: Session, question: str) -> Session:
    claimed = await store.queue.claim("w", only=session.id)
    assert claimed is not None
    outcome = Outcome(status=SessionStatus.BLOCKED, question=question)
    return await store.queue.finish(claimed.lease, outcome)


async def test_the_sessions_answer_is_recorded_as_the_questions_answer(agent: Agent, store):
    first = (await agent.post("/ask", {"question": "Which database?"})).json()
    second = (await agent.post("/ask", {"question": "Which port?"})).json()
    await store.inbox.reply(first["id"], sender="lead", body="PostgreSQL")
    question = await agentinbox.open_question(store, agent.ticket.asked)
    assert question == "Which port?"
    session = await blocked_with(store, await store.sessions.get(agent.ticket.session_id), question)

    sent = await chat.answer(store, session.id, "  5432 ", sender="lead-person")
    assert sent.session.status == SessionStatus.QUEUED
    replies = [
        m for m in await store.inbox.list(thread=first["thread"]) if m.reply_to == second["id"]
    ]
    assert [(m.kind, m.sender, m.body) for m in replies] == [
        (MessageKind.ANSWER, "lead-person", "5432")
    ]
    assert await agentinbox.open_question(store, agent.ticket.asked) is None


async def test_an_answer_the_leader_gave_already_is_not_recorded_twice(agent: Agent, store):
    asked = (await agent.post("/ask", {"question": "Which database?"})).json()
    session = await blocked_with(
        store, await store.sessions.get(agent.ticket.session_id), "Which database?"
    )
    await store.inbox.reply(asked["id"], sender="lead", body="MySQL", kind=MessageKind.ANSWER)
    await chat.answer(store, session.id, "MySQL")
    replies = [m for m in await store.inbox.list() if m.reply_to == asked["id"]]
    assert [m.sender for m in replies] == ["lead"]


async def test_a_question_of_the_final_message_is_not_taken_for_the_inboxs(agent: Agent, store):
    asked = (await agent.post("/ask", {"question": "Which database?"})).json()
    session = await blocked_with(store, await store.sessions.get(agent.ticket.session_id), "Other?")
    await chat.answer(store, session.id, "yes")
    assert [m.id for m in await store.inbox.list()] == [asked["id"]]


# --- the tool ---------------------------------------------------------------------------------


def tool(
    tmp_path: Path, agent: Agent | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    directory = inboxtool.install(tmp_path / "tools")
    base = {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    # A proxy that does not exist: the tool must not use it.
    base |= {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}
    if agent is not None:
        base |= {
            "TELECODER_INBOX_URL": agent.gateway.url + "/inbox/v1",
            "TELECODER_INBOX_TOKEN": agent.ticket.key,
        }
    return subprocess.run(
        ["telecoder-inbox", *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


async def in_thread(*args: Any, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(tool, *args, **env)


async def test_the_tool_posts_asks_waits_and_reads(agent: Agent, store, tmp_path):
    posted = await in_thread(tmp_path, agent, "post", "started on it")
    assert posted.returncode == 0, posted.stderr
    assert posted.stdout.startswith("posted (message ")

    asked = await in_thread(tmp_path, agent, "ask", "Which database?")
    assert asked.returncode == 0, asked.stderr
    assert "went to lead" in asked.stdout
    assert "end your turn" in asked.stdout

    async def leader_answers() -> None:
        async def asked() -> list[Any] | None:
            return [m for m in await store.inbox.fetch("lead") if m.body == "Which port?"] or None

        [question] = await store.inbox.wait(asked, seconds=30, what="the question")
        await store.inbox.reply(question.id, sender="lead", body="5432", kind=MessageKind.ANSWER)

    waited, _ = await asyncio.gather(
        in_thread(tmp_path, agent, "ask", "Which port?", "--wait", "20"), leader_answers()
    )
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout == "Answer from lead:\n5432\n"

    await store.inbox.send(
        sender="lead", recipient=f"session:{agent.ticket.session_id}", body="thanks"
    )
    shown = await in_thread(tmp_path, agent, "--json", "messages")
    assert [m["body"] for m in json.loads(shown.stdout)] == ["thanks"]
    assert (await in_thread(tmp_path, agent, "messages")).stdout == "no new messages\n"
    assert [m.body for m in await store.inbox.list(agent="lead")] == [
        "started on it", "Which database?", "Which port?", "5432", "thanks"
    ]  # fmt: skip


async def test_the_tool_reads_its_saved_settings_and_says_why_it_fails(agent: Agent, tmp_path):
    (tmp_path / inboxtool.CONFIG).write_text(
        json.dumps({"url": agent.gateway.url + "/inbox/v1", "token": agent.ticket.key})
    )
    saved = await in_thread(tmp_path, None, "post", "from the file")
    assert saved.returncode == 0, saved.stderr
    wrong = await in_thread(tmp_path, agent, "post", "x", TELECODER_INBOX_TOKEN="tc-wrong")
    assert wrong.returncode == 1
    assert "unknown or revoked inbox token" in wrong.stderr
    assert "(unauthorized, HTTP 401)" in wrong.stderr
    (tmp_path / inboxtool.CONFIG).unlink()
    nothing = await in_thread(tmp_path, None, "messages")
    assert nothing.returncode == 1
    assert "TELECODER_INBOX_URL and TELECODER_INBOX_TOKEN are not set" in nothing.stderr


def test_the_tool_is_installed_executable_and_only_rewritten_when_it_changed(tmp_path):
    directory = inboxtool.install(tmp_path / "tools")
    script = directory / "telecoder-inbox"
    assert os.access(script, os.X_OK)
    assert script.read_bytes() == Path(inboxtool.__file__).read_bytes()
    before = script.stat().st_ino
    inboxtool.install(tmp_path / "tools")
    assert script.stat().st_ino == before
    script.write_text("stale")
    inboxtool.install(tmp_path / "tools")
    assert script.read_bytes() == Path(inboxtool.__file__).read_bytes()
    assert sorted(p.name for p in directory.iterdir()) == ["telecoder-inbox"]
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert "post" in done.stdout
    assert "ask" in done.stdout


# --- through a worker, unconfined ---------------------------------------------------------------


async def test_with_the_local_runtime_too_an_open_question_blocks_the_session(
    settings, store, git_repo
):
    """The ``shell`` engine's command is the agent: it finds the tool on its PATH, asks (twice,
    one answered at once by nobody: both open) and ends; the session waits with the last."""
    worker = build_worker(tuned(settings, runtime="local"), store)
    script = (
        'telecoder-inbox post "starting" && telecoder-inbox ask "Which port?" && '
        'telecoder-inbox ask "Which host?" --wait 0.5 && echo asked'
    )
    done = await execute(worker, store, request(git_repo, script))
    assert done.status == SessionStatus.BLOCKED, done.error
    assert done.question == "Which host?"
    me = f"session:{done.id}"
    sent = await store.inbox.list(agent=me)
    assert [(m.kind, m.thread, m.recipient, m.body) for m in sent] == [
        (MessageKind.MESSAGE, me, None, "starting"),
        (MessageKind.QUESTION, me, None, "Which port?"),
        (MessageKind.QUESTION, me, None, "Which host?"),
    ]
    events = await all_events(store, done.id)
    assert [e.data["message"] for e in events if e.data.get("step") == "asked"] == [
        "asked for help: Which port?",
        "asked for help: Which host?",
    ]
    assert "went to the person who gave you this task" in "\n".join(outputs(events))


async def test_without_a_question_a_session_that_used_the_inbox_succeeds(settings, store, git_repo):
    worker = build_worker(tuned(settings, runtime="local"), store)
    done = await execute(worker, store, request(git_repo, 'telecoder-inbox post "all good"'))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert [m.body for m in await store.inbox.list(agent=f"session:{done.id}")] == ["all good"]
