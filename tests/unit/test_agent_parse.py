"""A model's reply to tool calls: native calls, JSON in the content, ``<tool_call>`` tags,
``<function=...>`` XML and ```bash fences; a broken attempt is a ``FormatError`` whose message
corrects the model, and prose is the final answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telecoder.agent.parse import TEXT_FORMAT_HELP, FormatError, tool_calls
from telecoder.agent.tools import NAMES, ToolCall


def calls(content: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(c.id, c.name, dict(c.arguments)) for c in tool_calls({"content": content})]


def format_error(message: dict[str, Any]) -> str:
    with pytest.raises(FormatError) as raised:
        tool_calls(message)
    return str(raised.value)


# -- native ----------------------------------------------------------------------------------


def test_openai_native_calls_keep_their_ids() -> None:
    message = {
        "role": "assistant",
        "content": 'ignored {"name": "write_file", "arguments": {}}',
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
            },
            {
                "id": "call_def",
                "type": "function",
                "function": {"name": "list_directory", "arguments": ""},
            },
        ],
    }
    assert tool_calls(message) == [
        ToolCall(id="call_abc", name="read_file", arguments={"path": "a.py"}),
        ToolCall(id="call_def", name="list_directory", arguments={}),
    ]


def test_ollama_native_calls_have_object_arguments_and_get_ids() -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "run_command", "arguments": {"command": "ls"}}},
            {"function": {"name": "search_files", "arguments": {"pattern": "def"}}},
        ],
    }
    assert tool_calls(message) == [
        ToolCall(id="call_1", name="run_command", arguments={"command": "ls"}),
        ToolCall(id="call_2", name="search_files", arguments={"pattern": "def"}),
    ]


def test_broken_native_calls_are_format_errors() -> None:
    bad_json = {"tool_calls": [{"id": "x", "function": {"name": "read_file", "arguments": "{p"}}]}
    error = format_error(bad_json)
    assert error.startswith("the arguments of your read_file call are not valid JSON (Expecting")
    assert '{"path": "README.md"}' in error
    unknown = {"tool_calls": [{"id": "x", "function": {"name": "bash", "arguments": "{}"}}]}
    assert "there is no tool 'bash'; the tools are: " + ", ".join(NAMES) in format_error(unknown)
    not_object = {"tool_calls": [{"function": {"name": "read_file", "arguments": "[1]"}}]}
    assert "must be a JSON object" in format_error(not_object)
    assert "no function name" in format_error({"tool_calls": [{"id": "x"}]})


# -- JSON in the content ---------------------------------------------------------------------


def test_a_bare_json_call_in_the_content() -> None:
    content = 'Let me look.\n{"name": "read_file", "arguments": {"path": "src/app.py"}}'
    assert calls(content) == [("call_1", "read_file", {"path": "src/app.py"})]


def test_several_json_calls_in_fences_with_parameters_or_encoded_arguments() -> None:
    content = (
        "First the layout, then the tests:\n"
        '```json\n{"name": "list_directory", "parameters": {"path": "src"}}\n```\n'
        "and\n"
        '```json\n{\n  "name": "run_command",\n'
        '  "arguments": "{\\"command\\": \\"pytest\\"}"\n}\n```'
    )
    assert calls(content) == [
        ("call_1", "list_directory", {"path": "src"}),
        ("call_2", "run_command", {"command": "pytest"}),
    ]


def test_json_lists_and_openai_shaped_objects_in_the_content() -> None:
    content = json.dumps(
        [
            {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a"}}},
            {"name": "read_file", "arguments": {"path": "b"}},
        ]
    )
    assert calls(content) == [
        ("call_1", "read_file", {"path": "a"}),
        ("call_2", "read_file", {"path": "b"}),
    ]
    wrapped = json.dumps({"tool_calls": [{"name": "list_directory", "arguments": {}}]})
    assert calls(wrapped) == [("call_1", "list_directory", {})]
    assert calls('{"name": "list_directory"}') == [("call_1", "list_directory", {})]


def test_a_call_missing_its_last_braces_at_the_end_is_read() -> None:
    assert calls('Reading it. {"name": "read_file", "arguments": {"path": "a.py"}') == [
        ("call_1", "read_file", {"path": "a.py"})
    ]
    assert calls('<tool_call>{"name": "read_file", "arguments": {"path": "b"</tool_call>') == [
        ("call_1", "read_file", {"path": "b"})
    ]


def test_mistral_and_llama_markers_around_json_calls() -> None:
    mistral = (
        '[TOOL_CALLS] [{"name": "read_file", "arguments": {"path": "a"}}, '
        '{"name": "list_directory", "arguments": {}}]'
    )
    assert calls(mistral) == [
        ("call_1", "read_file", {"path": "a"}),
        ("call_2", "list_directory", {}),
    ]
    llama = '<|python_tag|>{"name": "run_command", "parameters": {"command": "ls"}}<|eom_id|>'
    assert calls(llama) == [("call_1", "run_command", {"command": "ls"})]


def test_other_json_in_prose_is_not_a_call() -> None:
    content = (
        'Your package.json has {"name": "demo", "version": "1.0"} and the config is\n'
        '```json\n{"debug": true, "items": [1, 2]}\n```\nAll done.'
    )
    assert calls(content) == []


# -- tags ------------------------------------------------------------------------------------


def test_tool_call_tags_several_in_one_reply() -> None:
    content = (
        "I will read both.\n"
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n</tool_call>\n'
        '<tool_call>{"name": "read_file", "arguments": {"path": "b.py"}}</tool_call>'
    )
    assert calls(content) == [
        ("call_1", "read_file", {"path": "a.py"}),
        ("call_2", "read_file", {"path": "b.py"}),
    ]


def test_an_unclosed_tool_call_at_the_end_is_read() -> None:
    content = '<tool_call>{"name": "run_command", "arguments": {"command": "make test"}}'
    assert calls(content) == [("call_1", "run_command", {"command": "make test"})]


def test_function_xml_with_parameters() -> None:
    content = (
        "Writing the fix.\n"
        "<function=write_file>\n"
        "<parameter=path>\nsrc/app.py\n</parameter>\n"
        "<parameter=content>\ndef greet(name):\n    return f'hi {name}'\n</parameter>\n"
        "</function>"
    )
    assert calls(content) == [
        (
            "call_1",
            "write_file",
            {"path": "src/app.py", "content": "def greet(name):\n    return f'hi {name}'\n"},
        )
    ]


def test_function_xml_inside_tool_call_tags_and_unclosed() -> None:
    qwen3 = (
        "<tool_call>\n<function=read_file>\n<parameter=path>\nREADME.md\n</parameter>\n"
        "<parameter=start_line>\n3\n</parameter>\n</function>\n</tool_call>"
    )
    assert calls(qwen3) == [("call_1", "read_file", {"path": "README.md", "start_line": "3"})]
    stopped = "<function=run_command><parameter=command>ls -la</parameter>"
    assert calls(stopped) == [("call_1", "run_command", {"command": "ls -la"})]


def test_mixed_formats_are_returned_in_the_order_written() -> None:
    content = (
        "<function=list_directory><parameter=path>src</parameter></function>\n"
        '<tool_call>{"name": "read_file", "arguments": {"path": "a"}}</tool_call>\n'
        '{"name": "search_files", "arguments": {"pattern": "TODO"}}\n'
        "```bash\nignored when there are other calls\n```"
    )
    assert calls(content) == [
        ("call_1", "list_directory", {"path": "src"}),
        ("call_2", "read_file", {"path": "a"}),
        ("call_3", "search_files", {"pattern": "TODO"}),
    ]


# -- bash fences -----------------------------------------------------------------------------


def test_bash_and_sh_fences_are_run_commands() -> None:
    content = "Run the tests:\n```bash\npython -m pytest -q\n```\nthen\n```sh\nls src\n```"
    assert calls(content) == [
        ("call_1", "run_command", {"command": "python -m pytest -q"}),
        ("call_2", "run_command", {"command": "ls src"}),
    ]
    assert calls("```python\nprint(1)\n```") == []


def test_shell_fences_can_be_left_as_prose() -> None:
    answer = {"content": "Fixed. Run the tests with:\n```bash\npytest -q\n```"}
    assert tool_calls(answer, shell_fences=False) == []
    assert [c.name for c in tool_calls(answer)] == ["run_command"]
    json_call = {"content": '{"name": "list_directory", "arguments": {}}'}
    assert [c.name for c in tool_calls(json_call, shell_fences=False)] == ["list_directory"]


def test_calls_drafted_in_think_blocks_are_not_made() -> None:
    content = (
        '<think>Maybe {"name": "run_command", "arguments": {"command": "rm -rf build"}}, or '
        "<tool_call>{broken</tool_call>? No, read first.</think>\n"
        '<tool_call>{"name": "read_file", "arguments": {"path": "setup.py"}}</tool_call>'
    )
    assert calls(content) == [("call_1", "read_file", {"path": "setup.py"})]
    assert calls("<think>I could run\n```bash\nls\n```\nbut I am done.</think>Done.") == []


# -- broken attempts and prose ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            '<tool_call>{"name": "read_file", "arguments": {"path": "a"} "x"}</tool_call>',
            "its JSON is not valid (Expecting ',' delimiter at line 1 column",
        ),
        (
            '{"name": "read_file", "arguments": {"path": "a"} and then I will look',
            "its JSON is not valid (Expecting ',' delimiter at line 1 column",
        ),
        ("<tool_call>read README.md please</tool_call>", "the text inside <tool_call> tags"),
        ("<tool_call></tool_call>", "the text inside <tool_call> tags is not a call"),
        (
            "{'name': 'read_file', 'arguments': {'path': 'a'}}",
            "its JSON is not valid (Expecting property name enclosed in double quotes",
        ),
        (
            '```json\n{"name": "write_file", "arguments": {"path": "a", "content": "x\ny"}}\n```',
            "its JSON is not valid (Invalid control character",
        ),
        (
            '{"name": "run_command", "arguments": "{command: ls}"}',
            "the arguments of run_command are not valid JSON",
        ),
        (
            '{"name": "run_command", "arguments": ["ls"]}',
            'the "arguments" of run_command are not an object',
        ),
    ],
)
def test_a_call_that_cannot_be_read_is_corrected_with_an_example(
    content: str, problem: str
) -> None:
    error = format_error({"content": content})
    assert error.startswith("Your reply tries to call a tool, but " + problem)
    assert (
        '<tool_call>{"name": "read_file", "arguments": {"path": "README.md"}}</tool_call>' in error
    )
    assert error.endswith("Send the call again, corrected.")


def test_absurdly_nested_json_is_a_format_error_not_a_crash() -> None:
    for content in ("[" * 100_000, '{"name": "read_file", "arguments": ' + "[" * 100_000):
        assert "nested too deeply" in format_error({"content": content})
    deep = {"tool_calls": [{"function": {"name": "read_file", "arguments": "[" * 100_000}}]}
    assert "nested too deeply" in format_error(deep)


def test_an_unknown_tool_in_text_names_the_tools() -> None:
    for content in (
        '{"name": "bash", "arguments": {"command": "ls"}}',
        '<tool_call>{"name": "shell", "arguments": {}}</tool_call>',
        "<function=execute><parameter=cmd>ls</parameter></function>",
    ):
        error = format_error({"content": content})
        assert error.startswith("there is no tool ")
        assert (
            "the tools are: read_file, write_file, list_directory, run_command, search_files"
            in error
        )


@pytest.mark.parametrize(
    "content",
    [
        "The function greet now returns 'hi NAME'. Tests pass: 12 passed.",
        "I changed `{name}` placeholders in the template; see src/app.py.",
        "In JavaScript you would write {name: 'x', age: 3} instead.",
        "",
        None,
    ],
)
def test_prose_is_the_final_answer(content: str | None) -> None:
    assert calls(content) == []
    assert tool_calls({"content": content, "tool_calls": []}) == []


def test_content_given_as_parts_is_read() -> None:
    content = [
        {"type": "text", "text": "Reading."},
        {"type": "text", "text": '{"name": "read_file", "arguments": {"path": "x"}}'},
    ]
    assert calls(content) == [("call_1", "read_file", {"path": "x"})]


def test_the_text_format_help_shows_the_format_and_every_tool() -> None:
    assert '<tool_call>{"name": "read_file", "arguments": {"path": "README.md"}}</tool_call>' in (
        TEXT_FORMAT_HELP
    )
    assert "A reply without a tool call ends the task" in TEXT_FORMAT_HELP
    assert "one or more calls in a reply" in TEXT_FORMAT_HELP
    for signature in (
        "- read_file(path, start_line?, end_line?): ",
        "- write_file(path, content): ",
        "- list_directory(path?, depth?): ",
        "- run_command(command, timeout?): ",
        "- search_files(pattern, path?, glob?): ",
    ):
        assert signature in TEXT_FORMAT_HELP
    example = TEXT_FORMAT_HELP.split("like this:\n\n", 1)[1].split("\n\n", 1)[0]
    assert calls(example) == [("call_1", "read_file", {"path": "README.md"})]
