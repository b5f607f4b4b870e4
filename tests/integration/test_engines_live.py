"""Each real agent CLI, run through its engine's command, the real ``LocalRuntime`` and its
parser, against the fake model server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from telecoder.domain import EventKind, FailureKind
from telecoder.runtimes.local import LocalProcess
from tests.engine_cases import AIDER_SCRIPT, BY_ID, CASES, PROMPT, WRITTEN, Case, make_task
from tests.engine_driver import Run, drive
from tests.fakes.model_server import FakeModelServer, Reply

pytestmark = pytest.mark.usefixtures("agent_tools")

MAIN_KINDS = {
    EventKind.MESSAGE,
    EventKind.TOOL_CALL,
    EventKind.TOOL_RESULT,
    EventKind.USAGE,
    EventKind.RESULT,
}
# On an HTTP 500, Qwen Code backs off ~80 s (7 attempts) and aider ~60 s (until its fixed retry
# timeout); no setting lowers either. Their 500 handling is proven on their recorded real output
# instead (tests/unit/test_engine_parsers.py).
SLOW_500 = {"qwen", "acp-qwen", "aider"}


def ids(cases: tuple[Case, ...] | list[Case]) -> list[str]:
    return [c.id for c in cases]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
async def test_the_agent_writes_the_file(case: Case, tmp_path: Path) -> None:
    with FakeModelServer(default=case.script) as server:
        task = make_task(case, tmp_path, server.url)
        run = await drive(case.create(), task)
    assert run.outcome is not None
    assert run.outcome.ok, run.outcome.error
    assert (task.workdir / WRITTEN).read_text().strip() == "hello-from-fake"
    assert run.kinds() >= MAIN_KINDS
    assert run.outcome.session_id
    assert run.outcome.usage is not None
    assert run.outcome.usage.input_tokens > 0
    assert run.of(EventKind.RESULT)[-1].data["text"] == run.outcome.text
    assert server.model_requests()


# The engines that once put the prompt on the command line (gemini, opencode), and claude-code.
LONG_PROMPT = [BY_ID["claude-code"], BY_ID["opencode"], BY_ID["gemini"]]


@pytest.mark.parametrize("case", LONG_PROMPT, ids=ids(LONG_PROMPT))
async def test_a_prompt_over_the_128_kib_argument_limit_reaches_the_model(
    case: Case, tmp_path: Path
) -> None:
    """Under the API's 100,000 characters, over Linux's 128 KiB for one argument: an agent given
    it on its command line could not even start (E2BIG)."""
    context = "Context: " + "€" * 45_000
    prompt = f"{PROMPT}\n\n{context}"
    assert len(prompt) < 100_000 < 128 * 1024 < len(prompt.encode())
    with FakeModelServer(default=case.script) as server:
        task = make_task(case, tmp_path, server.url, prompt=prompt)
        run = await drive(case.create(), task)
    assert run.outcome is not None
    assert run.outcome.ok, run.outcome.error
    assert (task.workdir / WRITTEN).read_text().strip() == "hello-from-fake"
    sent = [json.dumps(r.body, ensure_ascii=False) for r in server.model_requests()]
    assert any(prompt in body.replace("\\n", "\n") for body in sent)


# Over ACP, a 500 is the 400 path plus the agent's own retries: tried where the adapter reports
# it differently (claude-agent-acp, codex-acp's thread status); the rest on recorded output.
ACP_500 = {"acp-claude", "acp-codex"}
FAILURES = [(c, 400) for c in CASES] + [
    (c, 500) for c in CASES if c.id not in SLOW_500 and (c.engine != "acp" or c.id in ACP_500)
]


@pytest.mark.parametrize(("case", "status"), FAILURES, ids=[f"{c.id}-{s}" for c, s in FAILURES])
async def test_a_failing_model_fails_the_run(case: Case, status: int, tmp_path: Path) -> None:
    with FakeModelServer(default=case.script) as server:
        task = make_task(case, tmp_path, f"{server.url}/err{status}")
        run = await drive(case.create(), task, limit=90)
    assert run.outcome is not None
    assert not run.outcome.ok
    assert run.outcome.failure_kind == FailureKind.MODEL_ERROR, run.outcome.error
    assert run.outcome.error
    assert EventKind.RESULT not in run.kinds()
    assert not (task.workdir / WRITTEN).exists()
    assert all(r.path.startswith(f"/err{status}/") for r in server.model_requests())
    assert server.model_requests()


# Every native CLI, and one ACP agent: stopping is the runtime's process-group signal, the same
# whatever the agent speaks.
STOPPABLE = [c for c in CASES if c.engine != "acp"] + [BY_ID["acp-claude"]]


@pytest.mark.parametrize("case", STOPPABLE, ids=ids(STOPPABLE))
async def test_stop_ends_a_busy_agent_within_seconds(case: Case, tmp_path: Path) -> None:
    stopped: dict[str, float] = {}

    async def stop_when_the_model_is_asked(process: LocalProcess, run: Run) -> None:
        asked = await asyncio.to_thread(server.wait_for_model_request, 60)
        assert asked, "the agent never asked the model"
        started = time.monotonic()
        await process.stop(3.0)
        stopped["seconds"] = time.monotonic() - started

    with FakeModelServer(default=case.script, slow_seconds=120) as server:
        task = make_task(case, tmp_path, f"{server.url}/slow")
        run = await drive(case.create(), task, limit=90, during=stop_when_the_model_is_asked)
    assert run.outcome is not None
    assert not run.outcome.ok
    assert stopped["seconds"] < 5
    assert run.seconds < 70


SECOND = "second.txt"
FOLLOW_UP = f"now also create {SECOND}"
FOLLOW_UP_SCRIPT = (
    Reply(text="Adding it.", command=f"echo two > {SECOND}"),
    Reply(text=f"Added {SECOND}."),
)
AIDER_FOLLOW_UP = (Reply(text=f"Adding it.\n\n{SECOND}\n```\ntwo\n```\n"),)
RESUMABLE = [BY_ID[name] for name in ("claude-code", "codex", "opencode", "pi", "gemini", "qwen")]
# Not acp-gemini: `gemini --acp` answers session/load with "No previous sessions found for this
# project" (the native `gemini --resume` works, above).
RESUMABLE += [BY_ID[n] for n in ("aider", "acp-opencode", "acp-qwen", "acp-claude", "acp-codex")]


@pytest.mark.parametrize("case", RESUMABLE, ids=ids(RESUMABLE))
async def test_resume_continues_the_same_conversation(case: Case, tmp_path: Path) -> None:
    follow_up = AIDER_FOLLOW_UP if case.script == AIDER_SCRIPT else FOLLOW_UP_SCRIPT
    with FakeModelServer(default=case.script, scripts={FOLLOW_UP: follow_up}) as server:
        first_task = make_task(case, tmp_path, server.url)
        first = await drive(case.create(), first_task)
        assert first.outcome is not None
        assert first.outcome.ok, first.outcome.error
        asked_before = len(server.model_requests())
        task = make_task(
            case,
            tmp_path,
            server.url,
            workdir=first_task.workdir,
            home=first_task.home,
            resume_id=first.outcome.session_id,
            prompt=FOLLOW_UP,
        )
        second = await drive(case.create(), task)
    assert second.outcome is not None
    assert second.outcome.ok, second.outcome.error
    assert (task.workdir / SECOND).read_text().strip() == "two"
    later = server.model_requests()[asked_before:]
    # The follow-up carried the first conversation: the model saw the first prompt again.
    bodies = [json.dumps(r.body) for r in later]
    assert any("create fake.txt" in body for body in bodies if FOLLOW_UP in body)
    if case.engine != "aider":
        assert second.outcome.session_id == first.outcome.session_id


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# The CLIs that give up on an unreachable model within seconds. The others retry with backoff
# for minutes (opencode ~70 s, aider and qwen ~85 s, codex > 120 s): the pipeline's timeout ends
# those.
GIVE_UP_FAST = [BY_ID[n] for n in ("claude-code", "pi", "gemini", "acp-claude", "acp-gemini")]


@pytest.mark.parametrize("case", GIVE_UP_FAST, ids=ids(GIVE_UP_FAST))
async def test_an_unreachable_model_fails_the_run(case: Case, tmp_path: Path) -> None:
    task = make_task(case, tmp_path, f"http://127.0.0.1:{closed_port()}")
    run = await drive(case.create(), task, limit=60)
    assert run.outcome is not None
    assert not run.outcome.ok
    assert run.outcome.failure_kind == FailureKind.MODEL_ERROR, run.outcome.error
    assert run.seconds < 30
