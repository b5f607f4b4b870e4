"""Every command has help and is documented in the README; every setting is in its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

from telecoder.cli import app
from telecoder.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def commands() -> dict[str, Any]:
    # Typer vendors its own click: look at the shape, not the class.
    group: Any = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name in group.list_commands(None):  # the commands are built when asked for
        command = group.get_command(None, name)
        if hasattr(command, "commands"):
            for sub, subcommand in command.commands.items():
                found[f"{name} {sub}"] = subcommand
        else:
            found[name] = command
    return found


def test_every_command_has_help_and_is_in_the_readme():
    found = commands()
    assert {"run", "list", "show", "logs", "cancel", "retry", "worker", "db upgrade"} <= set(found)
    for name, command in found.items():
        assert command.help, f"`telecoder {name}` has no help"
        assert f"`telecoder {name}" in README, f"`telecoder {name}` is not in the README"


def test_every_setting_is_in_the_readme():
    for name in Settings.model_fields:
        variable = f"TELECODER_{name.upper()}"
        if name == "github_token":
            variable = "GITHUB_TOKEN"
        if name.startswith("git_author_"):
            variable = "TELECODER_GIT_AUTHOR_NAME"
        assert variable in README, f"{variable} is not documented in the README"
