"""What each tool takes: its description and parameters, for the model and for checking a call.

One table feeds both the OpenAI tool definitions the model is offered (``tools.schemas``) and the
check of the arguments a model sends, so the two cannot drift apart. A number written as text is
accepted where a number is expected: calls parsed from XML carry every value as text.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from typing import Any, NamedTuple

MAX_DEPTH = 10  # how deep list_directory goes at most


class ArgumentError(ValueError):
    """A call's arguments do not fit its tool; the message is addressed to the model."""


class Param(NamedTuple):
    type: str  # JSON Schema type: string, integer or number
    required: bool
    description: str


_PATH_HELP = "relative to the worktree root (an absolute path inside it works too)"

TOOL_SPECS: dict[str, tuple[str, dict[str, Param]]] = {
    "read_file": (
        "Read a text file of the worktree. Give start_line/end_line (1-based, inclusive) to "
        "read part of a large file; the result says how many lines the file has.",
        {
            "path": Param("string", True, f"The file's path, {_PATH_HELP}."),
            "start_line": Param("integer", False, "First line to read (1-based)."),
            "end_line": Param("integer", False, "Last line to read (inclusive)."),
        },
    ),
    "write_file": (
        "Create or overwrite a file with the given content (missing parent directories are "
        "created). Always write the whole file. Files under .git cannot be written.",
        {
            "path": Param("string", True, f"The file's path, {_PATH_HELP}."),
            "content": Param("string", True, "The file's complete new content."),
        },
    ),
    "list_directory": (
        "List a directory's entries with their type (file, dir, link) and size; .git is "
        "skipped. depth > 1 lists subdirectories too.",
        {
            "path": Param("string", False, f"The directory, {_PATH_HELP}; default '.'."),
            "depth": Param("integer", False, f"How many levels to list (1 to {MAX_DEPTH})."),
        },
    ),
    "run_command": (
        "Run a shell command (/bin/sh -c) in the worktree root and return its exit code and its "
        "output (stdout and stderr merged; long output keeps its beginning and end). The command "
        "cannot read stdin; background processes do not outlive it.",
        {
            "command": Param("string", True, "The shell command, e.g. 'python -m pytest -q'."),
            "timeout": Param("number", False, "Seconds before the command is killed."),
        },
    ),
    "search_files": (
        "Search text files for a regular expression (Python syntax; an invalid one is searched "
        "as plain text). Returns matching lines as path:line:text; .git and binary files are "
        "skipped.",
        {
            "pattern": Param("string", True, "The regular expression, e.g. 'def \\w+_user'."),
            "path": Param("string", False, f"A directory or file to search, {_PATH_HELP}."),
            "glob": Param("string", False, "Only files matching this glob, e.g. '*.py'."),
        },
    ),
}


def check_arguments(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments checked against the tool's parameters (a number written as text,
    as calls parsed from XML give them, is accepted); ``ArgumentError`` names what is wrong."""
    if name not in TOOL_SPECS:
        raise ArgumentError(f"unknown tool {name!r}; the tools are: {', '.join(TOOL_SPECS)}")
    params = TOOL_SPECS[name][1]
    usage = ", ".join(
        f"{param} ({spec.type}{', required' if spec.required else ''})"
        for param, spec in params.items()
    )
    if not isinstance(given, Mapping):
        raise ArgumentError(
            f"the arguments of {name} must be an object; its arguments are: {usage}"
        )
    unknown = [key for key in given if key not in params]
    if unknown:
        raise ArgumentError(
            f"unknown argument {unknown[0]!r} for {name}; its arguments are: {usage}"
        )
    checked: dict[str, Any] = {}
    for param, spec in params.items():
        value = given.get(param)
        if value is None:
            if spec.required:
                raise ArgumentError(
                    f"{name} needs the argument {param!r}; its arguments are: {usage}"
                )
            continue
        converted = _convert(spec.type, value)
        if converted is None:
            raise ArgumentError(
                f"the argument {param!r} of {name} must be a{'n' if spec.type[0] == 'i' else ''} "
                f"{spec.type}, not {_shown(value)}"
            )
        checked[param] = converted
    return checked


def _shown(value: Any) -> str:
    """A wrong value, short, as JSON where it can be (reprlib bounds depth and length)."""
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError, RecursionError):
        return reprlib.repr(value)


def _convert(kind: str, value: Any) -> Any:
    """``value`` as ``kind``, or None when it is not one."""
    if kind == "string":
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind == "number" else int(value.strip())
        except ValueError:
            return None
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None  # NaN would make a timeout never expire
    return float(value)
