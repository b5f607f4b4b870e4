"""What each engine asks to run: argv, environment, config files (no process started)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from telecoder import registry
from telecoder.engines._support import find_binary, model_retries
from telecoder.engines.acp import AcpEngine, agent_of
from telecoder.engines.gemini import keep_conversation
from telecoder.engines.prices import cost_usd
from telecoder.errors import BadInput
from telecoder.protocols import EngineTask

ENGINES = [
    *("claude-code", "codex", "opencode", "pi", "gemini", "qwen", "aider", "goose", "acp"),
    "builtin",
]
ENV = {
    "PATH": "/usr/bin:/bin",
    "ANTHROPIC_BASE_URL": "http://proxy:1",
    "ANTHROPIC_API_KEY": "sk-ant",
    "OPENAI_BASE_URL": "http://proxy:2/v1",
    "OPENAI_API_KEY": "sk-oai",
    "GOOGLE_GEMINI_BASE_URL": "http://proxy:3",
    "GEMINI_API_KEY": "g-key",
}


def task(tmp_path: Path, model: str | None = "m1", resume_id: str | None = None) -> EngineTask:
    return EngineTask(
        prompt="-rf do it",
        workdir=tmp_path / "wt",
        home=tmp_path / "home",
        model=model,
        resume_id=resume_id,
        env=ENV,
    )


def test_every_engine_is_registered() -> None:
    assert set(ENGINES) <= set(registry.names("engines"))
    for name in ENGINES:
        assert registry.create("engines", name).name == name


@pytest.mark.parametrize("name", ENGINES)
def test_engines_keep_state_in_their_home_and_never_inherit_stdin(
    name: str, tmp_path: Path
) -> None:
    engine = registry.create("engines", name)
    the_task = task(tmp_path, model="opencode:m1" if name == "acp" else "m1")
    command = engine.command(the_task)
    assert command.env["HOME"] == str(the_task.home)
    assert all(not Path(rel).is_absolute() and ".." not in rel for rel in command.files)
    # stdin is the prompt, an ACP conversation, or nothing (/dev/null): never left open
    assert command.interactive == (name == "acp")
    if command.stdin is None:  # then the prompt is an argument, or a file in the home
        places = [*command.argv, *command.files.values()]
        assert any(the_task.prompt in place for place in places)


@pytest.mark.parametrize("name", [*ENGINES, "shell"])
def test_a_long_prompt_never_goes_in_argv(name: str, tmp_path: Path) -> None:
    """Linux takes at most 128 KiB in one argument (MAX_ARG_STRLEN): past that the agent could
    not start, so every engine sends the prompt on stdin or in a file in its home."""
    prompt = "€" * 50_000  # 150 KB of UTF-8 in 50,000 characters
    the_task = EngineTask(
        prompt=prompt,
        workdir=tmp_path / "wt",
        home=tmp_path / "home",
        model="opencode:m1" if name == "acp" else "m1",
        env=ENV,
    )
    command = registry.create("engines", name).command(the_task)
    assert max(len(arg.encode()) for arg in command.argv) < 4096
    if name != "acp":  # ACP sends it later, as a session/prompt request on stdin
        sent = (command.stdin or b"").decode()
        assert prompt in sent or prompt in command.files.values()


def test_shell_runs_the_command_from_a_file_in_its_home(tmp_path: Path) -> None:
    command = registry.create("engines", "shell").command(task(tmp_path))
    assert list(command.argv) == ["/bin/sh", str(tmp_path / "home" / "command.sh")]
    assert command.files == {"command.sh": "-rf do it"}
    assert command.stdin is None  # the command's own stdin stays /dev/null


@pytest.mark.parametrize(
    ("tier", "env", "turns"),
    [
        ("trivial", {}, "5"),
        ("standard", {}, "10"),
        ("complex", {}, "20"),
        (None, {}, "10"),
        ("complex", {"TELECODER_BUILTIN_MAX_ITERATIONS": "7"}, "7"),
    ],
)
def test_builtin_runs_this_python_with_the_tiers_turns(
    tier: str | None, env: dict[str, str], turns: str, tmp_path: Path
) -> None:
    the_task = dataclasses.replace(task(tmp_path), tier=tier, env={**ENV, **env})
    argv = list(registry.create("engines", "builtin").command(the_task).argv)
    assert argv[:4] == [sys.executable, "-I", "-m", "telecoder.agent"]
    assert argv[argv.index("--max-iterations") + 1] == turns


def test_builtin_passes_its_limits_the_endpoint_and_the_conversation_to_resume(
    tmp_path: Path,
) -> None:
    limits = {
        "TELECODER_BUILTIN_TOKEN_BUDGET": "5000",
        "TELECODER_BUILTIN_WALL_SECONDS": "60",
        "TELECODER_BUILTIN_COMMAND_TIMEOUT": "9",
        "OLLAMA_HOST": "http://proxy:4",
    }
    the_task = dataclasses.replace(task(tmp_path, resume_id="abc123"), env={**ENV, **limits})
    command = registry.create("engines", "builtin").command(the_task)
    argv = list(command.argv)
    pairs = dict(zip(argv[4::2], argv[5::2], strict=False))
    assert pairs["--model"] == "m1"
    assert pairs["--workdir"] == str(the_task.workdir)
    assert pairs["--token-budget"] == "5000"
    assert pairs["--wall-seconds"] == "60"
    assert pairs["--command-timeout"] == "9"
    assert pairs["--resume"] == "abc123"
    assert command.stdin == b"-rf do it"
    # The OpenAI and Ollama variables only: no other vendor's key.
    assert command.env["OPENAI_API_KEY"] == "sk-oai"
    assert command.env["OLLAMA_HOST"] == "http://proxy:4"
    assert "ANTHROPIC_API_KEY" not in command.env
    assert "GEMINI_API_KEY" not in command.env


def test_opencode_reads_the_prompt_on_stdin(tmp_path: Path) -> None:
    command = registry.create("engines", "opencode").command(task(tmp_path, resume_id="s-1"))
    assert command.argv[-2:] == ["--session", "s-1"]
    assert command.stdin == b"-rf do it"


def test_claude_code_runs_as_root_offline(tmp_path: Path) -> None:
    command = registry.create("engines", "claude-code").command(task(tmp_path, resume_id="abc"))
    assert command.env["IS_SANDBOX"] == "1"
    assert command.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert command.env["ANTHROPIC_BASE_URL"] == "http://proxy:1"
    assert command.stdin == b"-rf do it"
    assert command.argv[-2:] == ["--resume", "abc"]


def test_codex_provider_points_at_openai_base_url(tmp_path: Path) -> None:
    command = registry.create("engines", "codex").command(task(tmp_path, resume_id="t-1"))
    config = tomllib.loads(command.files[".codex/config.toml"])
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://proxy:2/v1"
    assert provider["env_key"] == "OPENAI_API_KEY"
    assert provider["wire_api"] == "responses"
    assert command.env["CODEX_HOME"] == str(tmp_path / "home" / ".codex")
    assert command.argv[-3:] == ["resume", "t-1", "-"]


def test_opencode_and_pi_define_an_openai_compatible_provider(tmp_path: Path) -> None:
    oc = registry.create("engines", "opencode").command(task(tmp_path))
    config = json.loads(oc.files["opencode.json"])
    assert config["provider"]["telecoder"]["options"]["baseURL"] == "http://proxy:2/v1"
    assert config["model"] == "telecoder/m1"
    pi = registry.create("engines", "pi").command(task(tmp_path, model="anthropic/claude-x"))
    assert pi.argv[pi.argv.index("--model") + 1] == "anthropic/claude-x"
    models = json.loads(pi.files[".pi/agent/models.json"])
    assert models["providers"]["telecoder"]["baseUrl"] == "http://proxy:2/v1"


def test_gemini_pins_api_key_auth_and_trust(tmp_path: Path) -> None:
    command = registry.create("engines", "gemini").command(task(tmp_path))
    settings = json.loads(command.files[".gemini/settings.json"])
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["security"]["folderTrust"]["enabled"] is False
    assert command.env["GOOGLE_GEMINI_BASE_URL"] == "http://proxy:3"
    assert command.argv[-1] == "--prompt="  # headless; the prompt is on stdin
    assert command.stdin == b"-rf do it"


def test_goose_splits_the_openai_base_url(tmp_path: Path) -> None:
    command = registry.create("engines", "goose").command(task(tmp_path))
    assert command.env["OPENAI_HOST"] == "http://proxy:2"
    assert command.env["OPENAI_BASE_PATH"] == "v1/chat/completions"
    assert command.env["GOOSE_MODE"] == "auto"


def test_acp_agent_choice(tmp_path: Path) -> None:
    assert agent_of(task(tmp_path, model=None)).name == "opencode"
    chosen = agent_of(task(tmp_path, model="claude:claude-sonnet-4-5"))
    assert (chosen.name, chosen.model) == ("claude", "claude-sonnet-4-5")
    with pytest.raises(BadInput):
        agent_of(task(tmp_path, model="nope"))
    custom = EngineTask(
        prompt="p",
        workdir=tmp_path,
        home=tmp_path,
        env={"TELECODER_ACP_COMMAND": "my-agent --acp --flag 'a b'"},
    )
    command = AcpEngine().command(custom)
    assert list(command.argv) == ["my-agent", "--acp", "--flag", "a b"]
    request = json.loads(command.stdin or b"")
    assert request["method"] == "initialize"
    assert request["params"]["protocolVersion"] == 1


def test_find_binary_prefers_the_agent_path(tmp_path: Path) -> None:
    tool = tmp_path / "tools" / "claude"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    env = {"TELECODER_AGENT_PATH": str(tool.parent), "PATH": "/usr/bin"}
    assert find_binary("claude", env) == str(tool)
    assert find_binary("claude", {"PATH": os.pathsep.join(["/nowhere", str(tool.parent)])}) == str(
        tool
    )
    assert find_binary("no-such-agent", env) == "no-such-agent"


def test_model_retries() -> None:
    assert model_retries({}) == 2
    assert model_retries({"TELECODER_MODEL_RETRIES": "0"}) == 0
    assert model_retries({"TELECODER_MODEL_RETRIES": "x"}) == 2


def test_prices() -> None:
    assert cost_usd("claude-sonnet-4-5", 1_000_000, 0) == pytest.approx(3.0)
    assert cost_usd("openai/gpt-5-mini", 0, 1_000_000) == pytest.approx(2.0)
    assert cost_usd("gpt-5", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(0.125)
    assert cost_usd("fake-model", 100, 100) is None
    assert cost_usd(None, 100, 100) is None


def test_gemini_acp_resume_keeps_the_conversation_out_of_the_loads_way(tmp_path: Path) -> None:
    chats = tmp_path / ".gemini" / "tmp" / "proj-1" / "chats"
    chats.mkdir(parents=True)
    sid = "98507d60-56af-41f9-9231-5f3674c881e0"
    conversation = chats / "session-2026-11-22T00-42-98507d60.jsonl"
    conversation.write_text('{"sessionId": "98507d60-..."}\n')
    other = chats / "session-2026-11-22T00-42-495e3a26.jsonl"
    other.write_text("another session\n")

    kept = keep_conversation(tmp_path, sid)
    target = chats / "session-2026-11-22T00-42-kept-98507d60.jsonl"
    assert kept == [target]
    assert target.read_text() == '{"sessionId": "98507d60-..."}\n'
    assert other.exists()  # another session's file is left alone
    # A later load started an empty file under the old name: the conversation is not replaced.
    conversation.write_text("empty start\n")
    assert keep_conversation(tmp_path, sid) == []
    assert target.read_text() == '{"sessionId": "98507d60-..."}\n'
    assert keep_conversation(tmp_path / "nothing-here", sid) == []
