"""The builtin agent's chat client against the fake model server: both APIs, usage, retries of
what may pass, a clear error for what does not, and servers that refuse ``tools``."""

from __future__ import annotations

import json
import time

import pytest

from telecoder.agent.model import Client, ModelError, OutOfTime, ToolsRejected
from tests.fakes.model_server import FakeModelServer, Reply, Usage

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
CALL = Reply(text="Reading.", tool="read_file", args={"path": "a.txt"})
USER = [{"role": "user", "content": "read a.txt"}]


def openai(server: FakeModelServer, **kw: float) -> Client:
    env = {"OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": "sk-test"}
    return Client(model="fake-model", env=env, backoff=0.01, **kw)  # type: ignore[arg-type]


def test_chat_completions_give_the_call_and_the_usage() -> None:
    with FakeModelServer(default=(CALL,), usage=Usage(input=50, output=7)) as server:
        answer = openai(server).chat(USER, TOOLS)
        [request] = server.model_requests()
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["stream"] is False
    assert request.body["tools"] == TOOLS
    assert answer.message["content"] == "Reading."
    [call] = answer.message["tool_calls"]
    assert call["function"]["name"] == "read_file"
    assert json.loads(call["function"]["arguments"]) == {"path": "a.txt"}
    assert (answer.input_tokens, answer.output_tokens) == (50, 7)


def test_ollama_speaks_its_native_api_and_comes_back_in_the_openai_shape() -> None:
    with FakeModelServer(default=(CALL,), usage=Usage(input=40, output=5)) as server:
        client = Client(
            model="ollama/qwen3", env={"OLLAMA_HOST": server.url.removeprefix("http://")}
        )
        history = [
            *USER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "b"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
        ]
        answer = client.chat(history, TOOLS)
        [request] = server.model_requests()
    assert request.path == "/api/chat"
    assert request.body["model"] == "qwen3"
    assert request.body["stream"] is False
    # Ollama reads arguments as objects.
    assert request.body["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"path": "b"}
    [call] = answer.message["tool_calls"]
    assert call["id"]
    assert json.loads(call["function"]["arguments"]) == {"path": "a.txt"}
    assert (answer.input_tokens, answer.output_tokens) == (40, 5)


def test_a_rate_limit_is_retried_until_it_passes() -> None:
    with FakeModelServer(default=(Reply(text="Done."),)) as server:
        server.limit_for(0.3, "0")
        answer = openai(server, retries=6).chat(USER, TOOLS)
        statuses = [entry.status for entry in server.log]
    assert answer.message["content"] == "Done."
    assert statuses[0] == 429
    assert statuses[-1] == 200


def test_a_server_error_that_stays_ends_with_a_clear_reason() -> None:
    with FakeModelServer(default=(Reply(error=500),)) as server:
        with pytest.raises(ModelError, match=r"HTTP 500 .*fake error 500") as raised:
            openai(server, retries=2).chat(USER, TOOLS)
        assert len(server.model_requests()) == 3  # the first and two retries
    assert "sk-test" not in str(raised.value)


def test_a_bad_request_is_not_retried() -> None:
    with FakeModelServer(default=(Reply(error=400),)) as server:
        with pytest.raises(ModelError, match="HTTP 400"):
            openai(server).chat(USER, None)
        assert len(server.model_requests()) == 1


def test_a_server_without_tools_says_so_and_text_mode_sends_none() -> None:
    with FakeModelServer(default=(Reply(text="ok"),), reject_tools=True) as server:
        client = openai(server)
        with pytest.raises(ToolsRejected, match="does not support tools"):
            client.chat(USER, TOOLS)
        answer = client.chat(USER, None)
        bodies = [r.body for r in server.model_requests()]
    assert answer.message == {"role": "assistant", "content": "ok"}
    assert "tools" in bodies[0]
    assert "tools" not in bodies[1]


def test_an_unreachable_model_is_a_model_error() -> None:
    with FakeModelServer() as server:
        url = server.url
    client = Client(model="m", env={"OPENAI_BASE_URL": url}, retries=1, backoff=0.01)
    with pytest.raises(ModelError, match="cannot reach the model"):
        client.chat(USER, None)


def test_no_request_outlives_the_deadline() -> None:
    with FakeModelServer(default=(Reply(text="late", delay=30),)) as server:
        started = time.monotonic()
        with pytest.raises(OutOfTime):
            openai(server).chat(USER, TOOLS, deadline=started + 0.5)
        took = time.monotonic() - started
    assert took < 5
