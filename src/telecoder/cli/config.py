"""``telecoder config list|get|set|unset``: the settings kept in ``$TELECODER_HOME/config.env``.

Secret values (tokens, keys, signing secrets) are never printed: ``****`` and, for a long one,
its last four characters. The environment wins over the file: ``list`` and ``get`` say when a
variable of the environment hides the file's value.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from telecoder.cli import configfile
from telecoder.cli.exits import Exit, print_json

app = typer.Typer(
    help="Settings kept in $TELECODER_HOME/config.env: list, get, set, unset (secrets masked).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _entry(name: str, value: str, source: str) -> dict[str, Any]:
    key = configfile.known().get(name)
    return {
        "key": name,
        "value": configfile.masked(key, value),
        "secret": key is None or key.secret,
        "known": key is not None,
        "source": source,
        "overridden": source == "file" and name in os.environ,
    }


@app.command("list")
def list_config(
    as_json: JsonOption = False,
    every: Annotated[
        bool, typer.Option("--all", help="Every setting config.env may hold, set or not.")
    ] = False,
) -> None:
    """List the settings in config.env (secrets masked); --all: every known setting."""
    held = configfile.read()
    rows = [_entry(name, value, "file") for name, value in held.items()]
    if every:
        rows += [
            {**_entry(name, "", "unset"), "value": None, "description": key.description}
            for name, key in sorted(configfile.known().items())
            if name not in held
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no settings in {configfile.path()} (see `telecoder config set`)")
        return
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        value = "(unset)" if r["value"] is None else r["value"]
        note = "  (the environment overrides it)" if r["overridden"] else ""
        typer.echo(f"{r['key']:<{width}}  {value}{note}")


@app.command("get")
def get(
    name: Annotated[str, typer.Argument(help="TELECODER_PORT, port, ANTHROPIC_API_KEY, …")],
    as_json: JsonOption = False,
) -> None:
    """Print a setting's value: config.env's, else the environment's (secrets masked)."""
    key = configfile.resolve(name)
    held = configfile.read()
    if key.name in os.environ:
        entry = _entry(key.name, os.environ[key.name], "environment")
    elif key.name in held:
        entry = _entry(key.name, held[key.name], "file")
    else:
        if as_json:
            print_json({"key": key.name, "value": None, "source": "unset"})
        else:
            typer.echo(f"{key.name} is not set (its default applies)", err=True)
        raise typer.Exit(Exit.NOT_FOUND)
    if as_json:
        print_json(entry)
    else:
        typer.echo(entry["value"])


@app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="TELECODER_PORT, port, ANTHROPIC_API_KEY, …")],
    value: Annotated[str, typer.Argument(help="The value (checked as the setting parses it).")],
    as_json: JsonOption = False,
) -> None:
    """Set a setting in config.env (checked first; the file is replaced at once, mode 0600)."""
    key = configfile.resolve(name)
    configfile.check(key, value)
    target = configfile.update({key.name: value})
    entry = _entry(key.name, value, "file")
    if as_json:
        print_json(entry)
        return
    typer.echo(f"{key.name}={entry['value']} written to {target}")
    if entry["overridden"]:
        typer.echo(f"note: {key.name} is set in the environment, which wins over the file")


@app.command("unset")
def unset(
    name: Annotated[str, typer.Argument(help="TELECODER_PORT, port, ANTHROPIC_API_KEY, …")],
    as_json: JsonOption = False,
) -> None:
    """Remove a setting from config.env (its default applies again)."""
    key = configfile.resolve(name)
    present = key.name in configfile.read()
    if present:
        configfile.update({key.name: None})
    if as_json:
        print_json({"key": key.name, "removed": present})
    else:
        typer.echo(f"{key.name} removed" if present else f"{key.name} was not in config.env")
