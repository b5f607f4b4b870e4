"""`telecoder engines`: the real CLIs found, their versions, which variables are set — never a
value."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest

from tests.cli import cli_env, telecoder
from tests.engine_cases import FIXTURES
from tests.engine_driver import TOOLS_BIN

SECRET = "sk-ant-this-is-very-secret-1234"
SECRET_URL = "http://internal-proxy.secret.example:8443/v1"


def without_tools(path: str) -> str:
    return os.pathsep.join(p for p in path.split(os.pathsep) if p != str(TOOLS_BIN))


def recorded_versions() -> dict[tuple[str, str | None], str]:
    """The CLI versions the parser fixtures were recorded from: what install-agents.sh pins."""
    found: dict[tuple[str, str | None], str] = {}
    for path in FIXTURES.iterdir():
        if not path.is_dir():
            continue
        case, _, version = path.name.rpartition("-")
        key = ("acp", case.removeprefix("acp-")) if case.startswith("acp-") else (case, None)
        found[key] = version
    return found


@pytest.mark.usefixtures("agent_tools")
def test_engines_reports_clis_versions_and_variables_never_values(home: Path) -> None:
    env = cli_env(
        home,
        PATH=without_tools(os.environ.get("PATH", "/usr/bin:/bin")),
        TELECODER_AGENT_PATH=str(TOOLS_BIN),
        ANTHROPIC_API_KEY=SECRET,
        OPENAI_BASE_URL=SECRET_URL,
    )
    for name in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        env.pop(name, None)
    env.pop("ANTHROPIC_BASE_URL", None)

    listed = telecoder("engines", "--json", env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = {(r["engine"], r["agent"]): r for r in json.loads(listed.stdout)}

    versions = recorded_versions()
    assert len(versions) >= 12
    for key, version in versions.items():
        assert rows[key]["installed"], key
        assert rows[key]["version"] == version, key
        assert Path(rows[key]["path"]).parent == TOOLS_BIN
    claude = rows[("claude-code", None)]
    assert claude["variables"] == {
        "ANTHROPIC_BASE_URL": False,
        "ANTHROPIC_API_KEY": True,
        "ANTHROPIC_AUTH_TOKEN": False,
    }
    assert claude["configured"] is True
    codex = rows[("codex", None)]
    assert codex["variables"] == {"OPENAI_BASE_URL": True, "OPENAI_API_KEY": False}
    assert codex["configured"] is False
    assert rows[("acp", "claude")]["configured"] is True
    goose = rows[("goose", None)]
    assert (goose["installed"], goose["path"], goose["version"]) == (False, None, None)
    assert rows[("shell", None)]["configured"] is True
    builtin = rows[("builtin", None)]
    assert builtin["variables"] == {
        "OPENAI_BASE_URL": True,
        "OPENAI_API_KEY": False,
        "OLLAMA_HOST": False,
    }

    shown = telecoder("engines", env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "claude-code" in shown.stdout
    assert "not installed" in shown.stdout
    for output in (listed.stdout, listed.stderr, shown.stdout, shown.stderr):
        assert SECRET not in output
        assert "secret.example" not in output


def test_engines_without_the_agent_path_finds_no_agent(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = cli_env(home, PATH=str(empty))
    env.pop("TELECODER_AGENT_PATH", None)
    listed = telecoder("engines", "--json", env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert rows
    # The builtin agent ships with TeleCoder: this Python runs it.
    assert not any(r["installed"] for r in rows if r["engine"] != "builtin")
    [builtin] = [r for r in rows if r["engine"] == "builtin"]
    assert builtin["installed"]
    assert builtin["path"] == sys.executable
    assert builtin["version"] == platform.python_version()
