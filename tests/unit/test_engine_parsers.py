"""The engines' parsers on recorded real output of each pinned CLI (``tests/fixtures/engines``),
and on Goose's documented lines (Goose cannot be installed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telecoder.domain import EventKind, FailureKind
from telecoder.engines.goose import GooseParser
from telecoder.protocols import AgentEvent, EngineOutcome, OutputParser
from tests.engine_cases import BY_ID, FIXTURES, make_task

RECORDED = sorted(p for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("_"))
MAIN_KINDS = {
    EventKind.MESSAGE,
    EventKind.TOOL_CALL,
    EventKind.TOOL_RESULT,
    EventKind.USAGE,
    EventKind.RESULT,
}


def case_of(directory: Path) -> str:
    return directory.name.rsplit("-", 1)[0]


def replay(directory: Path, scenario: str) -> tuple[list[AgentEvent], EngineOutcome, list[bytes]]:
    case = BY_ID[case_of(directory)]
    task = make_task(case, directory, "http://127.0.0.1:9", workdir=directory, home=directory)
    parser: OutputParser = case.create().parser(task)
    events: list[AgentEvent] = []
    replies: list[bytes] = []
    exit_code: int | None = None
    for raw in (directory / f"{scenario}.jsonl").read_text().splitlines():
        stream, value = json.loads(raw)
        if stream == "exit":
            exit_code = value
            continue
        feed = parser.feed(stream, value)
        events.extend(feed.events)
        if feed.reply:
            replies.append(feed.reply)
    return events, parser.finish(exit_code), replies


def test_every_case_has_recordings() -> None:
    assert {case_of(d) for d in RECORDED} == set(BY_ID)
    for directory in RECORDED:
        assert {p.name for p in directory.glob("*.jsonl")} == {
            "ok.jsonl",
            "err400.jsonl",
            "err500.jsonl",
        }


@pytest.mark.parametrize("directory", RECORDED, ids=lambda d: d.name)
def test_a_successful_run(directory: Path) -> None:
    events, outcome, _ = replay(directory, "ok")
    assert outcome.ok, outcome.error
    assert outcome.failure_kind is None
    assert {e.kind for e in events} >= MAIN_KINDS
    assert outcome.session_id
    assert outcome.usage is not None
    assert outcome.usage.input_tokens > 0
    assert outcome.usage.output_tokens > 0
    [result] = [e for e in events if e.kind == EventKind.RESULT]
    assert result.data["text"] == outcome.text
    usage = [e for e in events if e.kind == EventKind.USAGE][-1]
    assert usage.data["input_tokens"] == outcome.usage.input_tokens
    calls = [e for e in events if e.kind == EventKind.TOOL_CALL]
    results = [e for e in events if e.kind == EventKind.TOOL_RESULT]
    assert [c.data["id"] for c in calls] == [r.data["id"] for r in results]
    assert all(r.data["ok"] is True for r in results)
    if not directory.name.startswith("aider"):
        assert outcome.text == "All done: created fake.txt."
    if directory.name.startswith("acp-qwen"):  # Qwen's ACP sends no raw tool input
        assert calls[0].data["name"] == "run_shell_command"
    elif not directory.name.startswith("aider"):
        assert "hello-from-fake" in json.dumps(calls[0].data["input"])


@pytest.mark.parametrize("scenario", ["err400", "err500"])
@pytest.mark.parametrize("directory", RECORDED, ids=lambda d: d.name)
def test_a_failing_model(directory: Path, scenario: str) -> None:
    events, outcome, _ = replay(directory, scenario)
    assert not outcome.ok
    assert outcome.failure_kind == FailureKind.MODEL_ERROR, outcome.error
    assert outcome.error is not None
    if scenario == "err400":  # CLIs paraphrase a 500 ("servers are down", "high demand")
        assert "400" in outcome.error
    assert EventKind.RESULT not in {e.kind for e in events}
    assert EventKind.ERROR in {e.kind for e in events}


# Aider has no terminal event: its success needs a model reply and exit status 0.
WITH_TERMINAL_EVENT = [d for d in RECORDED if not d.name.startswith("aider-")]


@pytest.mark.parametrize("directory", WITH_TERMINAL_EVENT, ids=lambda d: d.name)
def test_no_terminal_event_is_a_failure(directory: Path) -> None:
    """A run cut off before its terminal event (a crash, a kill) never counts as success."""
    case = BY_ID[case_of(directory)]
    lines = (directory / "ok.jsonl").read_text().splitlines()
    task = make_task(case, directory, "http://127.0.0.1:9", workdir=directory, home=directory)
    parser: OutputParser = case.create().parser(task)
    for raw in lines[: len(lines) // 2]:
        stream, value = json.loads(raw)
        if stream != "exit":
            parser.feed(stream, value)
    outcome = parser.finish(0)
    assert not outcome.ok
    assert outcome.failure_kind == FailureKind.ENGINE_ERROR
    assert "without reporting a final result" in (outcome.error or "")


def test_claude_code_reports_its_own_cost() -> None:
    [directory] = [d for d in RECORDED if case_of(d) == "claude-code"]
    _, outcome, _ = replay(directory, "ok")
    assert outcome.usage is not None
    assert outcome.usage.cost_usd == pytest.approx(0.00117)


def test_acp_answers_with_session_new_and_prompt() -> None:
    [directory] = [d for d in RECORDED if case_of(d) == "acp-opencode"]
    _, outcome, replies = replay(directory, "ok")
    methods = [json.loads(r)["method"] for r in replies if b'"method"' in r]
    assert methods[:2] == ["session/new", "session/prompt"]
    assert outcome.ok


def test_acp_grants_permission_once() -> None:
    [directory] = [d for d in RECORDED if case_of(d) == "acp-gemini"]
    _, _, replies = replay(directory, "ok")
    answers = [json.loads(r) for r in replies if b'"result"' in r]
    assert answers
    assert answers[0]["result"]["outcome"] == {"outcome": "selected", "optionId": "proceed_once"}


def test_a_stderr_tail_is_part_of_the_error() -> None:
    [directory] = [d for d in RECORDED if case_of(d) == "gemini"]
    _, outcome, _ = replay(directory, "err400")
    assert "gemini stderr (last lines)" in (outcome.error or "")


# --- goose, from its documented stream-json ------------------------------------------------

GOOSE_OK = [
    '{"type":"message","message":{"id":"m1","role":"assistant","created":1795289000,"content":'
    '[{"type":"text","text":"I\'ll create the file."},{"type":"toolRequest","id":"call_1",'
    '"toolCall":{"status":"success","value":{"name":"developer__shell","arguments":'
    '{"command":"echo hi > fake.txt"}}}}]}}',
    '{"type":"message","message":{"id":"m2","role":"user","created":1795289001,"content":'
    '[{"type":"toolResponse","id":"call_1","toolResult":{"status":"success","value":'
    '{"content":[{"type":"text","text":"done"}]}}}]}}',
    '{"type":"notification","extension_id":"developer","log":{"message":"running"}}',
    '{"type":"message","message":{"id":"m3","role":"assistant","created":1795289002,"content":'
    '[{"type":"text","text":"All done."}]}}',
    '{"type":"complete","total_tokens":270,"input_tokens":240,"output_tokens":30,'
    '"cost_usd":0.0012}',
]


def test_goose_documented_run() -> None:
    parser = GooseParser("gpt-4o", session_id="telecoder-abc")
    events = [e for line in GOOSE_OK for e in parser.feed("stdout", line).events]
    outcome = parser.finish(0)
    assert outcome.ok
    assert outcome.text == "All done."
    assert outcome.session_id == "telecoder-abc"
    assert outcome.usage is not None
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (240, 30)
    assert outcome.usage.cost_usd == pytest.approx(0.0012)
    assert [e.kind for e in events] == [
        EventKind.MESSAGE,
        EventKind.TOOL_CALL,
        EventKind.TOOL_RESULT,
        EventKind.MESSAGE,
        EventKind.USAGE,
        EventKind.RESULT,
    ]
    assert events[1].data == {
        "id": "call_1",
        "name": "developer__shell",
        "input": {"command": "echo hi > fake.txt"},
    }
    assert events[2].data == {"id": "call_1", "ok": True, "output": "done"}


def test_goose_error_is_a_model_failure() -> None:
    parser = GooseParser(None, session_id="s")
    parser.feed("stdout", '{"type":"error","error":"Request failed with status: 400 Bad Request"}')
    parser.feed("stderr", "goose: provider error")
    outcome = parser.finish(1)
    assert not outcome.ok
    assert outcome.failure_kind == FailureKind.MODEL_ERROR
    assert "400" in (outcome.error or "")
    assert "provider error" in (outcome.error or "")


def test_goose_without_complete_is_a_failure() -> None:
    parser = GooseParser(None, session_id="s")
    parser.feed("stdout", GOOSE_OK[0])
    outcome = parser.finish(0)
    assert not outcome.ok
    assert outcome.failure_kind == FailureKind.ENGINE_ERROR


def test_acp_says_done_on_the_prompt_answer() -> None:
    [directory] = [d for d in RECORDED if case_of(d) == "acp-claude"]
    case = BY_ID["acp-claude"]
    task = make_task(case, directory, "http://127.0.0.1:9", workdir=directory, home=directory)
    parser: OutputParser = case.create().parser(task)
    done_on = []
    for raw in (directory / "ok.jsonl").read_text().splitlines():
        stream, value = json.loads(raw)
        if stream != "exit" and parser.feed(stream, value).done:
            done_on.append(json.loads(value))
    assert len(done_on) == 1
    assert done_on[0]["id"] == 3
    assert done_on[0]["result"]["stopReason"] == "end_turn"


def test_codex_warnings_are_warnings_not_errors() -> None:
    """Codex prints its warnings as ``error`` items (``Model metadata for `fake-model` not
    found``): a warning event, and the run still succeeds."""
    [directory] = [d for d in RECORDED if case_of(d) == "codex"]
    events, outcome, _ = replay(directory, "ok")
    assert outcome.ok, outcome.error
    [warning] = [e for e in events if e.kind == EventKind.WARNING]
    assert warning.data["message"].startswith("Model metadata for `fake-model` not found.")
    assert EventKind.ERROR not in {e.kind for e in events}


def test_a_gemini_error_of_severity_warning_is_a_warning() -> None:
    """Gemini CLI's stream-json ``error`` events carry a ``severity``; ``warning`` is a
    warning event (the run's ``result`` event says whether it failed)."""
    case = BY_ID["gemini"]
    here = Path(__file__).parent
    task = make_task(case, here, "http://127.0.0.1:9", workdir=here, home=here)
    parser: OutputParser = case.create().parser(task)
    line = '{"type":"error","timestamp":"2026-01-01T00:00:00Z","severity":"%s","message":"%s"}'
    [warning] = parser.feed("stdout", line % ("warning", "Loop detected")).events
    [error] = parser.feed("stdout", line % ("error", "Maximum session turns exceeded")).events
    assert (warning.kind, warning.data) == (EventKind.WARNING, {"message": "Loop detected"})
    assert error.kind == EventKind.ERROR
    assert error.data["message"] == "Maximum session turns exceeded"
