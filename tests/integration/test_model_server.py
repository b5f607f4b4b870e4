"""The fake model server itself: each wire protocol, turn choice, errors, recording."""

from __future__ import annotations

import json

import httpx

from tests.fakes.model_server import FakeModelServer, Reply

SHELL = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_anthropic_messages_stream_a_tool_call_then_text(model_server: FakeModelServer) -> None:
    body = {
        "model": "claude-x",
        "stream": True,
        "tools": [{"name": "Bash", "input_schema": SHELL}],
        "messages": [{"role": "user", "content": "create fake.txt"}],
    }
    first = httpx.post(f"{model_server.url}/v1/messages?beta=true", json=body).text
    events = [json.loads(d) for d in sse_data(first)]
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    assert starts[1]["name"] == "Bash"
    delta = next(e for e in events if e.get("delta", {}).get("type") == "input_json_delta")
    assert json.loads(delta["delta"]["partial_json"])["command"].startswith("echo hello-from-fake")
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
    ]
    second = httpx.post(f"{model_server.url}/v1/messages", json={**body, "stream": False}).json()
    assert second["content"] == [{"type": "text", "text": "All done: created fake.txt."}]
    assert second["stop_reason"] == "end_turn"


def test_chat_completions_stream_ends_with_usage_and_done(model_server: FakeModelServer) -> None:
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "bash", "parameters": SHELL}}],
        "messages": [{"role": "user", "content": "go"}],
    }
    data = sse_data(httpx.post(f"{model_server.url}/v1/chat/completions", json=body).text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 120
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "tool_calls"
    body["messages"] += [{"role": "tool", "tool_call_id": "c", "content": "ok"}]
    plain = httpx.post(
        f"{model_server.url}/v1/chat/completions", json={**body, "stream": False}
    ).json()
    assert plain["choices"][0]["message"]["content"] == "All done: created fake.txt."


def test_responses_stream_a_function_call(model_server: FakeModelServer) -> None:
    body = {
        "model": "m",
        "stream": True,
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "parameters": {
                    "type": "object",
                    "properties": {"cmd": {"type": "string"}},
                    "required": ["cmd"],
                },
            }
        ],
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}
        ],
    }
    events = [
        json.loads(d)
        for d in sse_data(httpx.post(f"{model_server.url}/v1/responses", json=body).text)
    ]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 15
    [call] = [
        e["item"]
        for e in events
        if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
    ]
    assert json.loads(call["arguments"])["cmd"].startswith("echo")
    body["input"].append(
        {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}
    )
    events = [
        json.loads(d)
        for d in sse_data(httpx.post(f"{model_server.url}/v1/responses", json=body).text)
    ]
    texts = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert texts == ["All done: created fake.txt."]


def test_gemini_stream_and_generate(model_server: FakeModelServer) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "go"}]}],
        "tools": [{"functionDeclarations": [{"name": "run_shell_command", "parameters": SHELL}]}],
    }
    url = f"{model_server.url}/v1beta/models/gem-x:streamGenerateContent?alt=sse"
    chunks = [json.loads(d) for d in sse_data(httpx.post(url, json=body).text)]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["promptTokenCount"] == 120
    assert (
        chunks[-1]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"]
        == "run_shell_command"
    )
    body["contents"].append(
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "run_shell_command", "response": {}}}],
        }
    )
    done = httpx.post(f"{model_server.url}/v1beta/models/gem-x:generateContent", json=body).json()
    assert done["candidates"][0]["content"]["parts"] == [{"text": "All done: created fake.txt."}]


def test_errors_on_demand_and_recorded_requests() -> None:
    with FakeModelServer(default=[Reply(error=429)]) as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=body).status_code == 429
        answer = httpx.post(f"{server.url}/err500/v1/messages", json=body)
        assert answer.status_code == 500
        assert answer.json()["error"]["message"] == "fake error 500"
        assert answer.headers["retry-after-ms"] == "10"
        assert [r.path for r in server.model_requests()] == [
            "/v1/chat/completions",
            "/err500/v1/messages",
        ]


def test_a_marker_selects_a_script() -> None:
    scripts = {"second": [Reply(text="second script")]}
    with FakeModelServer(scripts=scripts) as server:
        body = {
            "model": "m",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "tool", "content": "ok"},
                {"role": "user", "content": "now the second"},
            ],
        }
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == "second script"
        # no tools offered: a tool-calling turn answers in plain text (titles, side queries)
        body["messages"] = body["messages"][:1]
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == "Fake title"


def ndjson_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_ollama_chat_streams_ndjson_a_tool_call_then_text(model_server: FakeModelServer) -> None:
    body = {
        "model": "llama3.2",
        "tools": [{"type": "function", "function": {"name": "bash", "parameters": SHELL}}],
        "messages": [{"role": "user", "content": "create fake.txt"}],
    }
    answer = httpx.post(f"{model_server.url}/api/chat", json=body)
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = ndjson_lines(answer.text)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    [call] = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert call["function"]["name"] == "bash"
    assert call["function"]["arguments"]["command"].startswith("echo hello-from-fake")
    final = lines[-1]
    assert (final["prompt_eval_count"], final["eval_count"]) == (120, 15)
    assert final["model"] == "llama3.2"
    assert "".join(line["message"]["content"] for line in lines) == "I'll create the file."
    body["messages"] += [{"role": "tool", "content": "hello-from-fake"}]
    plain = httpx.post(f"{model_server.url}/api/chat", json={**body, "stream": False}).json()
    assert plain["done"] is True
    assert plain["message"] == {"role": "assistant", "content": "All done: created fake.txt."}
    assert plain["eval_count"] == 15


def test_ollama_generate_streams_or_answers_json(model_server: FakeModelServer) -> None:
    body = {"model": "llama3.2", "prompt": "say hi"}
    lines = ndjson_lines(httpx.post(f"{model_server.url}/api/generate", json=body).text)
    assert lines[-1]["done"] is True
    assert lines[-1]["prompt_eval_count"] == 120
    assert "".join(line["response"] for line in lines) == "Fake title"  # no tools offered
    plain = httpx.post(f"{model_server.url}/api/generate", json={**body, "stream": False}).json()
    assert (plain["response"], plain["done"], plain["eval_count"]) == ("Fake title", True, 15)
    error = httpx.post(f"{model_server.url}/err500/api/generate", json=body)
    assert (error.status_code, error.json()) == (500, {"error": "fake error 500"})


def test_model_discovery_lists_the_models() -> None:
    with FakeModelServer(models=("alpha", "beta:7b")) as server:
        listing = httpx.get(f"{server.url}/v1/models").json()
        assert [m["id"] for m in listing["data"]] == ["alpha", "beta:7b"]
        assert listing["object"] == "list"  # OpenAI's shape ...
        assert (listing["has_more"], listing["first_id"], listing["last_id"]) == (
            False,
            "alpha",
            "beta:7b",
        )  # ... and Anthropic's
        assert {m["type"] for m in listing["data"]} == {"model"}
        gemini = httpx.get(f"{server.url}/v1beta/models").json()
        assert [m["name"] for m in gemini["models"]] == ["models/alpha", "models/beta:7b"]
        assert "generateContent" in gemini["models"][0]["supportedGenerationMethods"]
        tags = httpx.get(f"{server.url}/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["alpha:latest", "beta:7b"]
        assert server.model_requests() == []  # listings are not model requests


def test_responses_answer_json_when_not_streamed(model_server: FakeModelServer) -> None:
    body = {"model": "m", "stream": False, "input": "hello"}
    answer = httpx.post(f"{model_server.url}/v1/responses", json=body).json()
    assert answer["status"] == "completed"
    assert answer["output"][0]["content"][0]["text"] == "Fake title"  # no tools offered
    assert answer["usage"]["input_tokens"] == 120
