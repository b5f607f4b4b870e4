"""Every engine that runs a real CLI here, how to aim it at the fake model server, and the CLI's
version (recorded fixtures live under ``tests/fixtures/engines/<case>-<version>/``)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from telecoder import registry
from telecoder.protocols import Engine, EngineTask
from tests.engine_driver import TOOLS_BIN, operator_env
from tests.fakes.model_server import DEFAULT_SCRIPT, Reply

FIXTURES = Path(__file__).parent / "fixtures" / "engines"
PROMPT = "create fake.txt containing hello-from-fake"
WRITTEN = "fake.txt"
AIDER_SCRIPT = (Reply(text=f"I'll create the file.\n\n{WRITTEN}\n```\nhello-from-fake\n```\n"),)


@dataclass(frozen=True)
class Case:
    id: str  # names the fixture directory
    engine: str  # registry name
    model: str
    binary: str  # whose --version names the fixture directory
    script: Sequence[Reply] = DEFAULT_SCRIPT

    def create(self) -> Engine:
        engine: Engine = registry.create("engines", self.engine)
        return engine

    def version(self) -> str:
        done = subprocess.run(
            [str(TOOLS_BIN / self.binary), "--version"], capture_output=True, text=True, timeout=60
        )
        out = done.stdout + done.stderr
        found = re.search(r"\d+\.\d+\.\d+", out)
        assert found, f"{self.binary} --version printed {out!r}"
        return found.group(0)


CASES = (
    Case("claude-code", "claude-code", "claude-sonnet-4-5", "claude"),
    Case("codex", "codex", "fake-model", "codex"),
    Case("opencode", "opencode", "fake-model", "opencode"),
    Case("pi", "pi", "fake-model", "pi"),
    Case("gemini", "gemini", "fake-model", "gemini"),
    Case("qwen", "qwen", "fake-model", "qwen"),
    Case("aider", "aider", "fake-model", "aider", AIDER_SCRIPT),
    Case("acp-opencode", "acp", "opencode:fake-model", "opencode"),
    Case("acp-gemini", "acp", "gemini:fake-model", "gemini"),
    Case("acp-qwen", "acp", "qwen:fake-model", "qwen"),
    Case("acp-claude", "acp", "claude:claude-sonnet-4-5", "claude-agent-acp"),
    Case("acp-codex", "acp", "codex:fake-model", "codex-acp"),
)
BY_ID = {case.id: case for case in CASES}


def make_task(
    case: Case,
    root: Path,
    base_url: str,
    *,
    workdir: Path | None = None,
    home: Path | None = None,
    resume_id: str | None = None,
    prompt: str = PROMPT,
) -> EngineTask:
    """A task in a fresh git repository under ``root``, every vendor endpoint at ``base_url``."""
    if workdir is None:
        workdir = root / "repo"
        workdir.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(workdir)], check=True)
    if home is None:
        home = root / f"home-{uuid.uuid4().hex[:8]}"
        home.mkdir(parents=True)
    env = operator_env(
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="sk-ant-fake",
        OPENAI_BASE_URL=f"{base_url}/v1",
        OPENAI_API_KEY="sk-fake",
        GOOGLE_GEMINI_BASE_URL=base_url,
        GEMINI_API_KEY="fake-gemini-key",
        TELECODER_MODEL_RETRIES="1",
    )
    return EngineTask(
        prompt=prompt, workdir=workdir, home=home, model=case.model, resume_id=resume_id, env=env
    )


# --- end to end through `telecoder` ------------------------------------------------------------

# Aider asks gpt-4.1-mini for its "diff" edit format: a new file is a SEARCH/REPLACE block with an
# empty search. The marker in the prompt selects this script on the shared fake server.
AIDER_MARK = "(aider edit)"
AIDER_DIFF_SCRIPT = (
    Reply(
        text=(
            "I'll create the file.\n\nfake.txt\n```\n<<<<<<< SEARCH\n=======\n"
            "hello-from-fake\n>>>>>>> REPLACE\n```\n"
        )
    ),
)


@dataclass(frozen=True)
class E2E:
    """An engine as `telecoder run --engine ENGINE --model MODEL` runs it; models with a price,
    so the session's cost is a real figure (the CLI's own, or from ``prices``)."""

    id: str
    engine: str
    model: str
    marker: str = ""

    @property
    def prompt(self) -> str:
        return f"{PROMPT} {self.marker}".strip()


E2E_CASES = (
    E2E("claude-code", "claude-code", "claude-sonnet-4-5"),
    E2E("codex", "codex", "gpt-5-mini"),
    E2E("opencode", "opencode", "gpt-4.1-mini"),
    E2E("pi", "pi", "gpt-4.1-mini"),
    E2E("gemini", "gemini", "gemini-2.5-flash"),
    E2E("qwen", "qwen", "qwen3-coder-flash"),
    E2E("aider", "aider", "gpt-4.1-mini", AIDER_MARK),
    E2E("acp-opencode", "acp", "opencode:gpt-4.1-mini"),
    E2E("acp-gemini", "acp", "gemini:gemini-2.5-flash"),
    E2E("acp-claude", "acp", "claude:claude-sonnet-4-5"),
    E2E("builtin", "builtin", "gpt-4.1-mini"),
)
E2E_BY_ID = {case.id: case for case in E2E_CASES}


def agent_env(home: Path, base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `telecoder` command whose engines reach the fake model server at
    ``base_url``. The agent CLIs are found through ``TELECODER_AGENT_PATH`` only: the project's
    tools directory is taken off ``PATH``."""
    from tests.cli import cli_env

    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != str(TOOLS_BIN)
    )
    return cli_env(
        home,
        PATH=path,
        TELECODER_AGENT_PATH=str(TOOLS_BIN),
        TELECODER_MODEL_RETRIES="1",
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="sk-ant-fake",
        OPENAI_BASE_URL=f"{base_url}/v1",
        OPENAI_API_KEY="sk-fake",
        GOOGLE_GEMINI_BASE_URL=base_url,
        GEMINI_API_KEY="fake-gemini-key",
        **extra,
    )
