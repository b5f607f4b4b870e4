"""A model's reply to tool calls: native ``tool_calls`` first, then calls written as text.

Models served without a tool-call parser write their calls in the content (research §6.2).
Tried in order when the reply has no native call: JSON objects with ``name`` and
``arguments``/``parameters`` (bare or in a ```json fence); ``<tool_call>{json}</tool_call>``
(Hermes, Qwen2.5); ``<function=NAME><parameter=P>value</parameter></function>``; a ```bash
fence (a ``run_command``). A reply with none of these is the agent's answer; a reply that tries
one and fails raises ``FormatError``, whose message is the correction sent to the model.

CONTRACT (shared by the ``agent-tools`` and ``builtin`` branches; change it only together).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from telecoder.agent.tools import ToolCall


class FormatError(Exception):
    """A tool call the parser could not read; ``str(e)`` is the message for the model."""


# The system prompt's part for models without native tool calls: how to write a call as text.
TEXT_FORMAT_HELP = ""


def tool_calls(message: Mapping[str, Any]) -> list[ToolCall]:
    """The calls of an assistant ``message`` (OpenAI chat shape: ``content``, ``tool_calls``;
    Ollama's native shape too). [] means the message is the final answer."""
    raise NotImplementedError
