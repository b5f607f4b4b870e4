"""The ReAct loop: ask the model, run the tools it calls, send back what they observed, repeat.

A reply with no tool call is the final answer. Before every question to the model the
guardrails are checked; each ends the run with its reason and keeps what was done (the files
stay written; the ``end`` event lists them):

- ``iteration_cap``: as many model turns as the tier allows (5/10/20);
- ``repeated_call``: the same tool with the same arguments three times in a row (the model is
  stuck; the third call is not run);
- ``token_budget``: input and output tokens of this run, summed, reached the budget;
- ``wall_clock``: the run took as long as it may;
- ``format_errors``: three replies in a row whose tool calls could not be read (each gets the
  parser's correction as a user message first);
- ``model_error``: the model API failed for good.

A server that refuses ``tools`` switches the run to text mode: no ``tools`` field, the text
format in the system prompt, observations sent as user messages (also done for a call the
model wrote as text in native mode: a ``tool`` message must answer a native call's id).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecoder.agent import parse
from telecoder.agent.model import Client, ModelError, OutOfTime, ToolsRejected
from telecoder.agent.tools import Observation, ToolCall, Tools, schemas

Emit = Callable[[dict[str, Any]], None]
REPEATS = 3  # the same call this many times in a row ends the run
FORMAT_ERRORS = 3  # unreadable replies in a row that end the run

SYSTEM = """You are a software engineer working in a git repository (your working directory).
Use the tools to read, search, change and test the code: read_file, write_file, list_directory,
run_command (a shell command in the repository) and search_files. Paths are relative to the
repository; nothing outside it can be reached. Work in small steps and check your changes (run
the tests when there are any). Do not commit: your changes are committed for you.
When the task is done, reply without any tool call: a short summary of what you changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_iterations: int = 10
    token_budget: int | None = None  # input + output tokens of the run
    wall_seconds: float | None = None


@dataclass(slots=True, kw_only=True)
class Conversation:
    """The messages so far, stored as JSON (``<dir>/<id>.json``) after every turn."""

    id: str
    messages: list[dict[str, Any]]
    text_mode: bool = False
    directory: Path = field(default_factory=Path)

    @classmethod
    def start(cls, directory: Path, prompt: str) -> Conversation:
        system = {"role": "system", "content": SYSTEM}
        user = {"role": "user", "content": prompt}
        return cls(id=uuid.uuid4().hex, messages=[system, user], directory=directory)

    @classmethod
    def load(cls, directory: Path, conversation_id: str) -> Conversation:
        if not conversation_id.isalnum():
            raise ValueError(f"not a conversation id: {conversation_id!r}")
        data = json.loads((directory / f"{conversation_id}.json").read_text())
        return cls(
            id=conversation_id,
            messages=list(data["messages"]),
            text_mode=bool(data.get("text_mode")),
            directory=directory,
        )

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"id": self.id, "text_mode": self.text_mode, "messages": self.messages}
        path = self.directory / f"{self.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False))
        tmp.replace(path)

    def use_text_mode(self) -> None:
        """The server has no tools: tell the model how to write a call instead."""
        self.text_mode = True
        system = self.messages[0]
        if parse.TEXT_FORMAT_HELP not in str(system.get("content")):
            system["content"] = f"{system['content']}\n\n{parse.TEXT_FORMAT_HELP}"


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    reason: str  # done | iteration_cap | repeated_call | token_budget | wall_clock | ...
    text: str


def run(
    client: Client, tools: Tools, conversation: Conversation, limits: Limits, emit: Emit
) -> End:
    """Run the loop to its end; every step is an event (``emit``) and the conversation is
    saved after every turn."""
    started = time.monotonic()
    tokens_in = tokens_out = 0
    format_errors = 0
    recent: list[str] = []  # the keys of the latest calls
    written: list[str] = []  # files the agent wrote, for the end's summary

    def stop(reason: str, why: str) -> End:
        done = f"files written: {', '.join(written)}" if written else "no file written"
        return End(reason=reason, text=f"stopped ({reason}): {why}; {done}")

    iteration = 0
    while True:
        if iteration >= limits.max_iterations:
            return stop("iteration_cap", f"{limits.max_iterations} model turns were allowed")
        spent = tokens_in + tokens_out
        if limits.token_budget is not None and spent >= limits.token_budget:
            return stop("token_budget", f"{spent} tokens used of {limits.token_budget}")
        elapsed = time.monotonic() - started
        if limits.wall_seconds is not None and elapsed >= limits.wall_seconds:
            return stop("wall_clock", f"{elapsed:.0f}s taken of {limits.wall_seconds:g}s")
        iteration += 1

        try:
            offered = None if conversation.text_mode else schemas()
            deadline = None if limits.wall_seconds is None else started + limits.wall_seconds
            answer = client.chat(conversation.messages, offered, deadline)
        except ToolsRejected as e:
            emit({"type": "notice", "text": f"{e}: switching to tool calls as text"})
            conversation.use_text_mode()
            iteration -= 1  # no turn was spent
            continue
        except OutOfTime:
            wall = f"{limits.wall_seconds:g}s taken, waiting for the model"
            return stop("wall_clock", wall)
        except ModelError as e:
            return stop("model_error", str(e))
        tokens_in += answer.input_tokens
        tokens_out += answer.output_tokens
        emit({"type": "usage", "input_tokens": tokens_in, "output_tokens": tokens_out})
        message = answer.message
        reasoning = message.pop("reasoning_content", None)
        conversation.messages.append(message)
        conversation.save()
        if reasoning:
            emit({"type": "thought", "text": str(reasoning)})
        if message.get("content"):
            emit({"type": "assistant", "text": str(message["content"])})

        try:
            # A ```bash fence is a call only for a model told so (text mode): a native-tool
            # model's answer may show the user a command.
            calls = parse.tool_calls(message, shell_fences=conversation.text_mode)
        except parse.FormatError as e:
            format_errors += 1
            emit({"type": "format_error", "message": str(e)})
            conversation.messages.append({"role": "user", "content": str(e)})
            conversation.save()
            if format_errors >= FORMAT_ERRORS:
                return stop(
                    "format_errors", f"{format_errors} replies in a row had unreadable calls"
                )
            continue
        format_errors = 0
        if not calls:
            return End(reason="done", text=str(message.get("content") or ""))

        native = bool(message.get("tool_calls"))
        ended: End | None = None
        for call in calls:
            recent = [*recent[-(REPEATS - 1) :], call.key()]
            repeated = len(recent) == REPEATS and len(set(recent)) == 1
            args = dict(call.arguments)
            emit({"type": "tool_call", "id": call.id, "name": call.name, "arguments": args})
            if ended is not None:  # the run stopped at an earlier call of this reply
                observation = Observation(
                    tool=call.name, ok=False, error="not run: the run stopped"
                )
            elif repeated:
                error = f"not run: the same call {REPEATS} times in a row"
                observation = Observation(tool=call.name, ok=False, error=error)
                why = f"{call.name} was called {REPEATS} times in a row alike"
                ended = stop("repeated_call", why)
            else:
                observation = tools.run(call)
                if observation.ok and call.name == "write_file":
                    path = str(call.arguments.get("path"))
                    written += [] if path in written else [path]
            result = observation.to_dict()
            emit(
                {"type": "tool_result", "id": call.id, "ok": observation.ok, "observation": result}
            )
            conversation.messages.append(_observed(call, observation, native))
        conversation.save()
        if ended is not None:
            return ended


def _observed(call: ToolCall, observation: Observation, native: bool) -> dict[str, Any]:
    """The message that carries an observation back: a ``tool`` message answering a native
    call, else a user message naming the call."""
    if native:
        return {"role": "tool", "tool_call_id": call.id, "content": observation.to_json()}
    return {"role": "user", "content": f"Observation of {call.name}:\n{observation.to_json()}"}
