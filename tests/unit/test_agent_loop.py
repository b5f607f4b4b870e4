"""The builtin agent's loop on its own (no sandbox, no TeleCoder run): the real tools in a
directory, the fake model server, the conversation as it is stored and resumed."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import telecoder.agent
from telecoder.agent.loop import Conversation, Limits, run
from telecoder.agent.model import Client
from telecoder.agent.parse import TEXT_FORMAT_HELP
from telecoder.agent.tools import Tools
from tests.fakes.model_server import FakeModelServer, Reply


def client(server: FakeModelServer) -> Client:
    return Client(model="fake-model", env={"OPENAI_BASE_URL": f"{server.url}/v1"}, backoff=0.01)


def start(tmp_path: Path, prompt: str = "make notes.txt") -> tuple[Conversation, Tools]:
    work = tmp_path / "work"
    work.mkdir()
    return Conversation.start(tmp_path / "store", prompt), Tools(work)


def stored(conversation: Conversation) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (conversation.directory / f"{conversation.id}.json").read_text()
    )
    return data


def test_the_conversation_is_stored_after_every_turn_and_resumes(tmp_path: Path) -> None:
    script = (
        Reply(tool="write_file", args={"path": "notes.txt", "content": "one\n"}),
        Reply(text="Wrote notes.txt."),
    )
    events: list[dict[str, Any]] = []
    conversation, tools = start(tmp_path)
    with FakeModelServer(default=script) as server:
        end = run(client(server), tools, conversation, Limits(), events.append)
    assert (end.reason, end.text) == ("done", "Wrote notes.txt.")
    assert (tools.root / "notes.txt").read_text() == "one\n"
    roles = [m["role"] for m in stored(conversation)["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert [e["type"] for e in events] == [
        *("usage", "tool_call", "tool_result"),
        *("usage", "assistant"),
    ]
    # A later run loads it and goes on from where it was, its prompt last.
    again = Conversation.load(conversation.directory, conversation.id)
    again.messages.append({"role": "user", "content": "now add two"})
    followed = (
        Reply(tool="write_file", args={"path": "notes.txt", "content": "one\ntwo\n"}),
        Reply(text="Added two."),
    )
    with FakeModelServer(scripts={"now add two": followed}) as server:
        end = run(client(server), tools, again, Limits(), lambda _: None)
        first = server.model_requests()[0].body["messages"]
    assert end.reason == "done"
    assert first[: len(conversation.messages)] == conversation.messages
    assert (tools.root / "notes.txt").read_text() == "one\ntwo\n"


def test_a_repeated_call_stops_the_run_and_every_call_is_still_answered(tmp_path: Path) -> None:
    call = '<tool_call>{"name": "list_directory", "arguments": {"path": "."}}</tool_call>'
    events: list[dict[str, Any]] = []
    conversation, tools = start(tmp_path)
    with FakeModelServer(default=(Reply(text=call * 4),)) as server:
        end = run(client(server), tools, conversation, Limits(), events.append)
    assert end.reason == "repeated_call"
    assert "no file written" in end.text
    results = [e for e in events if e["type"] == "tool_result"]
    assert [r["ok"] for r in results] == [True, True, False, False]
    assert "3 times in a row" in results[2]["observation"]["error"]
    assert results[3]["observation"]["error"] == "not run: the run stopped"
    # Calls read from text: their observations are user messages, all four stored.
    observed = [m for m in stored(conversation)["messages"] if m["role"] == "user"][1:]
    assert len(observed) == 4


def test_a_server_without_tools_switches_the_conversation_to_text_for_good(
    tmp_path: Path,
) -> None:
    script = (
        Reply(text='<tool_call>{"name": "read_file", "arguments": {"path": "a.txt"}}</tool_call>'),
        Reply(text="It says hi."),
    )
    events: list[dict[str, Any]] = []
    conversation, tools = start(tmp_path, "what does a.txt say?")
    (tools.root / "a.txt").write_text("hi\n")
    with FakeModelServer(default=script, reject_tools=True, count_replies=True) as server:
        end = run(client(server), tools, conversation, Limits(max_iterations=2), events.append)
        sent = [r.body for r in server.model_requests()]
    assert (end.reason, end.text) == ("done", "It says hi.")
    assert ["tools" in body for body in sent] == [True, False, False]  # the refused turn is free
    assert events[0]["type"] == "notice"
    kept = stored(conversation)
    assert kept["text_mode"] is True
    assert TEXT_FORMAT_HELP in kept["messages"][0]["content"]
    assert '"content": "hi\\n"' in kept["messages"][-2]["content"]


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", ""])
def test_a_resumed_id_must_be_a_plain_name(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a conversation id"):
        Conversation.load(tmp_path, bad)


def test_a_command_shown_in_a_native_models_answer_is_not_run(tmp_path: Path) -> None:
    answer = "Done. To check it yourself:\n```bash\ntouch ran.txt\n```"
    events: list[dict[str, Any]] = []
    conversation, tools = start(tmp_path)
    with FakeModelServer(default=(Reply(text=answer),)) as server:
        end = run(client(server), tools, conversation, Limits(), events.append)
    assert (end.reason, end.text) == ("done", answer)
    assert not [e for e in events if e["type"] == "tool_call"]
    assert not (tools.root / "ran.txt").exists()


def test_the_agent_imports_only_its_own_package_the_standard_library_and_httpx() -> None:
    """It runs inside the sandbox as a process of its own: nothing of TeleCoder's settings,
    store or secrets may come with it."""
    package = Path(telecoder.agent.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = top in sys.stdlib_module_names or top == "httpx"
                assert allowed or name.startswith("telecoder.agent"), (source.name, name)
