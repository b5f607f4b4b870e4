"""What a new user does first: `make agents`, then `make serve` finds them; relative agent paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from telecoder.settings import Settings

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def no_agent_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELECODER_AGENT_PATH", raising=False)


def test_a_relative_agent_path_is_made_absolute_against_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = Settings(home=tmp_path / "home", agent_path=".tools/bin:/opt/agents:../x")
    assert settings.agent_path == f"{tmp_path}/.tools/bin:/opt/agents:{tmp_path.parent}/x"
    assert settings.engine_control_env()["TELECODER_AGENT_PATH"] == settings.agent_path


def test_a_relative_agent_path_in_config_env_is_relative_to_that_file(monkeypatch, tmp_path):
    home = tmp_path / "tc"
    home.mkdir()
    (home / "config.env").write_text("TELECODER_AGENT_PATH=agents/bin\n")
    monkeypatch.setenv("TELECODER_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert Settings.load().agent_path == f"{home}/agents/bin"
    monkeypatch.setenv("TELECODER_AGENT_PATH", "mine")  # the environment's: against the cwd
    assert Settings.load().agent_path == f"{tmp_path}/mine"


@pytest.mark.parametrize("target", ["serve", "run"])
def test_make_serve_finds_the_agents_and_installs_no_test_tooling(target, tmp_path):
    done = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path}/venv", "ARGS=--port 8765"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "[dev" not in done.stdout  # pytest, mypy, playwright, … are for `make test`
    assert "pip install --quiet -e '.[memory]'" in done.stdout
    assert f'TELECODER_AGENT_PATH="${{TELECODER_AGENT_PATH:-{ROOT}/.tools/bin}}"' in done.stdout
    assert "--port 8765" in done.stdout


def test_the_readme_links_the_architecture_page_that_ships():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme
    assert "ARCHITECTURE.md" not in readme
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "## 4. Layout and dependency direction" in page
    assert "engine_choice.py" in page  # kept true to the code
