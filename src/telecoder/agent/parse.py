"""A model's reply to tool calls: native ``tool_calls`` first, then calls written as text.

Models served without a tool-call parser write their calls in the content (research §6.2).
Tried in order when the reply has no native call: JSON objects with ``name`` and
``arguments``/``parameters`` (bare or in a ```json fence); ``<tool_call>{json}</tool_call>``
(Hermes, Qwen2.5); ``<function=NAME><parameter=P>value</parameter></function>``; a ```bash
fence (a ``run_command``). A reply with none of these is the agent's answer; a reply that tries
one and fails raises ``FormatError``, whose message is the correction sent to the model.

The first three formats may be mixed and repeated in one reply: every call found is returned,
in the order written (a JSON object inside ``<tool_call>`` tags counts once). A ```bash fence
counts only when the reply has no other call, since models also show commands in prose. An
unclosed ``<tool_call>`` or ``<function=...>`` at the end of a reply is read too: servers often
stop generating on the closing tag. ``<think>...</think>`` blocks (reasoning models served
without a reasoning parser) are left out: a call drafted while thinking is not made.

CONTRACT (shared by the ``agent-tools`` and ``builtin`` branches; change it only together).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from telecoder.agent.specs import TOOL_SPECS
from telecoder.agent.tools import NAMES, ToolCall


class FormatError(Exception):
    """A tool call the parser could not read; ``str(e)`` is the message for the model."""


_EXAMPLE = '<tool_call>{"name": "read_file", "arguments": {"path": "README.md"}}</tool_call>'


def _signature(name: str) -> str:
    description, params = TOOL_SPECS[name]
    arguments = ", ".join(param + ("" if spec.required else "?") for param, spec in params.items())
    return f"- {name}({arguments}): {description}"


# The system prompt's part for models without native tool calls: how to write a call as text.
TEXT_FORMAT_HELP = (
    "You act by calling tools. Write each call in your reply as one JSON object inside "
    "<tool_call> tags, like this:\n\n"
    f"{_EXAMPLE}\n\n"
    '"name" is one of the tools below; "arguments" is an object with that tool\'s arguments '
    "(those marked ? are optional). Use valid JSON: double quotes, and \\n for newlines inside "
    "strings. You may make one or more calls in a reply, one <tool_call> block each; their "
    "results come back in the next message. A reply without a tool call ends the task: write "
    "it only when you are done, as your final answer (and put no ```bash block in it: such a "
    "block is run as a command).\n\nThe tools:\n" + "\n".join(_signature(name) for name in NAMES)
)

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FUNCTION = re.compile(r"<function=([^>]*)>(.*?)(?:</function>|\Z)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>]*)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_SHELL_FENCE = re.compile(r"```[ \t]*(?:bash|sh|shell)[ \t]*\n(.*?)```", re.DOTALL)
_CALL_ATTEMPT = re.compile(r"""[{\[]\s*\{?\s*["']?(?:name|function)["']?\s*:""")


def tool_calls(message: Mapping[str, Any], *, shell_fences: bool = True) -> list[ToolCall]:
    """The calls of an assistant ``message`` (OpenAI chat shape: ``content``, ``tool_calls``;
    Ollama's native shape too). [] means the message is the final answer.

    ``shell_fences=False`` reads no ```bash fence as a call: for a model offered native tools,
    whose final answer may well show the user a command."""
    try:
        return _calls(message, shell_fences)
    except RecursionError:  # JSON nested thousands deep: never a call, never a crash
        raise _broken("its JSON is nested too deeply to be read") from None


def _calls(message: Mapping[str, Any], shell_fences: bool) -> list[ToolCall]:
    native = message.get("tool_calls")
    if native:
        if not isinstance(native, list):
            raise FormatError("tool_calls must be a list of calls")
        return [_native(entry, index) for index, entry in enumerate(native, start=1)]
    text = _THINK.sub("", _text(message.get("content")))
    found = _text_calls(text)
    if not found and shell_fences:
        found = [
            (match.start(), "run_command", {"command": match.group(1).strip()})
            for match in _SHELL_FENCE.finditer(text)
            if match.group(1).strip()
        ]
    found.sort(key=lambda call: call[0])
    return [
        ToolCall(id=f"call_{index}", name=name, arguments=arguments)
        for index, (_, name, arguments) in enumerate(found, start=1)
    ]


def _native(entry: Any, index: int) -> ToolCall:
    """One native call: OpenAI's (``arguments`` a JSON string) or Ollama's (an object)."""
    function = entry.get("function") if isinstance(entry, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise FormatError(
            "a tool call has no function name; call one of the tools: " + ", ".join(NAMES)
        )
    name = _known(function["name"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise FormatError(
                f"the arguments of your {name} call are not valid JSON ({_where(error)}); "
                'send them as one JSON object, e.g. {"path": "README.md"}'
            ) from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise FormatError(
            f"the arguments of your {name} call must be a JSON object of named arguments, "
            'e.g. {"path": "README.md"}'
        )
    call_id = entry.get("id")
    return ToolCall(
        id=call_id if isinstance(call_id, str) and call_id else f"call_{index}",
        name=name,
        arguments=dict(arguments),
    )


_Found = tuple[int, str, dict[str, Any]]  # where in the text, tool name, arguments


def _text_calls(text: str) -> list[_Found]:
    """The calls written in ``text`` as tags or JSON, each with its position."""
    found: list[_Found] = []
    for match in _TOOL_CALL.finditer(text):
        body = match.group(1).strip()
        calls = _functions(body) if body.startswith("<function=") else _json_calls(body)
        if not calls:
            raise _broken("the text inside <tool_call> tags is not a call")
        found += [(match.start(), name, arguments) for _, name, arguments in calls]
    text = _mask(text, _TOOL_CALL)
    found += _functions(text)
    text = _mask(text, _FUNCTION)
    found += _json_calls(text)
    return found


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with ``pattern``'s matches blanked (same length, so positions still hold)."""
    return pattern.sub(lambda match: " " * len(match.group(0)), text)


def _functions(text: str) -> list[_Found]:
    """The ``<function=NAME><parameter=P>value</parameter></function>`` calls in ``text``."""
    found: list[_Found] = []
    for match in _FUNCTION.finditer(text):
        name = _known(match.group(1).strip())
        arguments: dict[str, Any] = {}
        for parameter in _PARAMETER.finditer(match.group(2)):
            key = parameter.group(1).strip()
            value = parameter.group(2)
            # A value is written on lines of its own: a file's content loses the newline after
            # the tag and keeps its last one (files end with one); other arguments are trimmed.
            arguments[key] = value.removeprefix("\n") if key == "content" else value.strip()
        found.append((match.start(), name, arguments))
    return found


def _json_calls(text: str) -> list[_Found]:
    """The JSON calls in ``text``: objects with ``name`` and ``arguments`` (or ``parameters``),
    alone, in a list, or wrapped as OpenAI writes them (``function``, ``tool_calls``)."""
    decoder = json.JSONDecoder()
    found: list[_Found] = []
    position = 0
    while True:
        start = _next_bracket(text, position)
        if start < 0:
            return found
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as error:
            if not _attempts_call(text, start):
                position = start + 1
                continue
            value, end = _closed(text, start), len(text)
            if value is None:
                raise _broken(f"its JSON is not valid ({_where(error)})") from None
        calls = _as_calls(value)
        if calls is not None:
            found += [(start, name, arguments) for name, arguments in calls]
        position = end


def _closed(text: str, start: int) -> Any:
    """The call at ``start`` that runs to the end of ``text`` but lacks its last brace or two
    (small models often drop them), or None."""
    for missing in ("}", "}}"):
        try:
            value = json.loads(text[start:] + missing)
        except json.JSONDecodeError:
            continue
        return value if _as_calls(value) else None
    return None


def _attempts_call(text: str, start: int) -> bool:
    """Whether the JSON that failed at ``start`` was meant as a call: it opens with a ``name``
    (or ``function``) key and names a tool or has arguments close by (not any object in prose)."""
    if not _CALL_ATTEMPT.match(text, start):
        return False
    near = text[start : start + 300]
    return any(word in near for word in (*NAMES, "arguments", "parameters"))


def _next_bracket(text: str, position: int) -> int:
    starts = [index for index in (text.find("{", position), text.find("[", position)) if index >= 0]
    return min(starts, default=-1)


def _as_calls(value: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """The calls ``value`` holds, or None when it is not a call (any other JSON)."""
    if isinstance(value, list):
        calls = [_as_calls(item) for item in value]
        if not value or any(call is None for call in calls):
            return None
        return [one for call in calls if call for one in call]
    if not isinstance(value, Mapping):
        return None
    if isinstance(value.get("function"), Mapping):
        return _as_calls(value["function"])
    if isinstance(value.get("tool_calls"), list):
        return _as_calls(value["tool_calls"])
    name = value.get("name")
    if not isinstance(name, str):
        return None
    if "arguments" in value or "parameters" in value:
        arguments = value.get("arguments", value.get("parameters"))
    elif set(value) == {"name"} and name in NAMES:
        arguments = {}  # a tool called without arguments, e.g. {"name": "list_directory"}
    else:
        return None  # some other object with a name: a package.json, say
    name = _known(name)
    if isinstance(arguments, str):  # arguments encoded twice, as OpenAI's wire format does
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise _broken(f"the arguments of {name} are not valid JSON ({_where(error)})") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise _broken(f'the "arguments" of {name} are not an object of named arguments')
    return [(name, dict(arguments))]


def _known(name: str) -> str:
    if name not in NAMES:
        raise FormatError(
            f"there is no tool {name!r}; the tools are: {', '.join(NAMES)}. "
            f"Call one of them, for example: {_EXAMPLE}"
        )
    return name


def _broken(problem: str) -> FormatError:
    return FormatError(
        f"Your reply tries to call a tool, but {problem}. Write each call as one JSON object "
        "inside <tool_call> tags, with double-quoted keys and strings and \\n for newlines "
        f"inside strings, for example:\n{_EXAMPLE}\nSend the call again, corrected."
    )


def _where(error: json.JSONDecodeError) -> str:
    return f"{error.msg} at line {error.lineno} column {error.colno}"


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
