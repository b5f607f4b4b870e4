"""The built-in agent's five tools on a real worktree: each works, and each escape or mistake
comes back as an observation with ``ok: false`` and an error the model can act on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from telecoder.agent.specs import TOOL_SPECS
from telecoder.agent.tools import NAMES, Limits, Observation, ToolCall, Tools, schemas


@pytest.fixture
def root(tmp_path: Path) -> Path:
    worktree = tmp_path / "work"
    worktree.mkdir()
    subprocess.run(["git", "init", "-q", str(worktree)], check=True)
    (worktree / "README.md").write_text("# Demo\nline two\nline three\n")
    (worktree / "src").mkdir()
    (worktree / "src" / "app.py").write_text("def greet(name):\n    return 'hi ' + name\n")
    return worktree


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the worktree holding a secret the agent must not reach."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("TOP SECRET\n")
    return directory


def call(tools: Tools, name: str, **arguments: Any) -> dict[str, Any]:
    observation = tools.run(ToolCall(id="call_1", name=name, arguments=arguments))
    as_json = json.loads(observation.to_json())
    assert as_json == observation.to_dict()
    assert as_json["tool"] == name
    return as_json


def refused(tools: Tools, name: str, **arguments: Any) -> str:
    result = call(tools, name, **arguments)
    assert result["ok"] is False, result
    assert set(result) == {"tool", "ok", "error"}, result
    assert "TOP SECRET" not in json.dumps(result)
    return str(result["error"])


# -- read_file -------------------------------------------------------------------------------


def test_read_file_returns_the_content_and_its_line_count(root: Path) -> None:
    result = call(Tools(root), "read_file", path="README.md")
    assert result == {
        "tool": "read_file",
        "ok": True,
        "path": "README.md",
        "content": "# Demo\nline two\nline three\n",
        "start_line": 1,
        "end_line": 3,
        "lines": 3,
        "truncated": False,
        "error": None,
    }


def test_read_file_reads_a_line_range_given_as_numbers_or_text(root: Path) -> None:
    tools = Tools(root)
    part = call(tools, "read_file", path="README.md", start_line=2, end_line=2)
    assert (part["content"], part["start_line"], part["end_line"], part["lines"]) == (
        "line two\n",
        2,
        2,
        3,
    )
    as_text = call(tools, "read_file", path="README.md", start_line="2", end_line="9")
    assert as_text["content"] == "line two\nline three\n"
    assert as_text["end_line"] == 3
    assert "has 3 lines" in refused(tools, "read_file", path="README.md", start_line=7)
    assert "line range" in refused(tools, "read_file", path="README.md", start_line=3, end_line=1)


def test_read_file_accepts_an_absolute_path_inside_the_worktree(root: Path) -> None:
    result = call(Tools(root), "read_file", path=str(root / "src" / "app.py"))
    assert result["ok"] is True
    assert result["path"] == "src/app.py"


def test_read_file_explains_missing_files_directories_and_binary_files(root: Path) -> None:
    tools = Tools(root)
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    assert "no file 'nope.txt'" in refused(tools, "read_file", path="nope.txt")
    assert "is a directory; use list_directory" in refused(tools, "read_file", path="src")
    assert "binary file" in refused(tools, "read_file", path="image.png")


def test_read_file_stops_at_the_read_cap_and_says_so(root: Path) -> None:
    (root / "big.txt").write_text("".join(f"line {n}\n" for n in range(1, 2001)))
    result = call(Tools(root, Limits(read_cap=100)), "read_file", path="big.txt")
    assert result["truncated"] is True
    assert result["lines"] == 2000
    assert result["content"].startswith("line 1\nline 2\n")
    assert "read stopped after 100 bytes" in result["content"]
    later = call(Tools(root, Limits(read_cap=100)), "read_file", path="big.txt", start_line=1500)
    assert later["content"].startswith("line 1500\n")
    exact = call(Tools(root, Limits(read_cap=14)), "read_file", path="big.txt")  # two lines
    assert (exact["content"].split("\n[")[0], exact["end_line"]) == ("line 1\nline 2\n", 2)
    assert exact["truncated"] is True


def test_read_file_output_cap_keeps_head_and_tail(root: Path) -> None:
    (root / "wide.txt").write_text("A" * 500 + "B" * 500)
    result = call(Tools(root, Limits(output_cap=100)), "read_file", path="wide.txt")
    assert result["truncated"] is True
    assert result["content"].startswith("A" * 50 + "\n[... 900 characters omitted")
    assert result["content"].endswith("]\n" + "B" * 50)


# -- confinement -----------------------------------------------------------------------------


def test_paths_leaving_the_worktree_are_refused(root: Path, outside: Path) -> None:
    tools = Tools(root)
    for path in ("../outside/secret.txt", "src/../../outside/secret.txt", str(outside / "x")):
        error = refused(tools, "read_file", path=path)
        assert "outside the worktree" in error
        assert "give a path relative to it" in error
    assert "outside the worktree" in refused(tools, "write_file", path="../evil.txt", content="x")
    assert not (root.parent / "evil.txt").exists()
    assert "outside the worktree" in refused(tools, "list_directory", path="..")
    assert "outside the worktree" in refused(tools, "search_files", pattern="SECRET", path="/")


def test_symbolic_links_out_of_the_worktree_are_refused(root: Path, outside: Path) -> None:
    (root / "secret-link").symlink_to(outside / "secret.txt")
    (root / "dir-link").symlink_to(outside)
    tools = Tools(root)
    for path in ("secret-link", "dir-link/secret.txt"):
        assert "symbolic link that points outside" in refused(tools, "read_file", path=path)
    assert "symbolic link" in refused(tools, "write_file", path="secret-link", content="pwned")
    assert "symbolic link" in refused(tools, "write_file", path="dir-link/new.txt", content="x")
    assert "symbolic link" in refused(tools, "list_directory", path="dir-link")
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_a_link_swapped_in_after_the_check_does_not_lead_out(root: Path, outside: Path) -> None:
    """What ``_resolve`` approved a moment ago (``sub/secret.txt``, a real directory) is opened
    component by component; once ``sub`` has become a link out, the open fails."""
    tools = Tools(root)
    (root / "sub").mkdir()
    approved = root / "sub" / "secret.txt"
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside)
    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
        with pytest.raises(NotADirectoryError):
            tools._open_beneath(approved, flags, create=True)
    (root / "last").symlink_to(outside / "secret.txt")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        tools._open_beneath(root / "last", os.O_WRONLY | os.O_TRUNC)
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"


def test_symbolic_links_inside_the_worktree_are_followed(root: Path) -> None:
    (root / "docs").symlink_to(root / "src")
    result = call(Tools(root), "read_file", path="docs/app.py")
    assert result["ok"] is True
    assert result["path"] == "src/app.py"


def test_searches_do_not_follow_links_out_of_the_worktree(root: Path, outside: Path) -> None:
    (root / "dir-link").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "secret.txt")
    result = call(Tools(root), "search_files", pattern="SECRET")
    assert result["matches"] == []
    listing = call(Tools(root), "list_directory", depth=3)
    assert {"name": "dir-link", "type": "link", "size": None} in listing["entries"]
    assert all(not entry["name"].startswith("dir-link/") for entry in listing["entries"])


def test_writes_into_git_are_refused(root: Path) -> None:
    tools = Tools(root)
    for path in (".git/hooks/pre-commit", ".git/config", "./src/../.git/HEAD", ".git"):
        error = refused(tools, "write_file", path=path, content="#!/bin/sh\necho pwned\n")
        assert "inside .git, which cannot be written" in error
    assert not (root / ".git" / "hooks" / "pre-commit").exists()
    assert call(tools, "read_file", path=".git/HEAD")["ok"] is True  # reading is harmless


def test_nul_bytes_and_empty_paths_are_refused(root: Path) -> None:
    tools = Tools(root)
    assert "NUL byte" in refused(tools, "read_file", path="README.md\0.txt")
    assert "NUL byte" in refused(tools, "write_file", path="a\0b", content="x")
    assert "the path is empty" in refused(tools, "read_file", path="  ")
    long = refused(tools, "read_file", path="../" + "x" * 5000)
    assert "outside the worktree" in long
    assert len(long) < 500


# -- write_file ------------------------------------------------------------------------------


def test_write_file_creates_parents_and_overwrites(root: Path) -> None:
    tools = Tools(root)
    created = call(tools, "write_file", path="pkg/sub/mod.py", content="x = 'é'\n")
    assert created == {
        "tool": "write_file",
        "ok": True,
        "path": "pkg/sub/mod.py",
        "bytes": 9,
        "created": True,
        "error": None,
    }
    assert (root / "pkg" / "sub" / "mod.py").read_text() == "x = 'é'\n"
    again = call(tools, "write_file", path="pkg/sub/mod.py", content="y = 1\n")
    assert again["created"] is False
    assert (root / "pkg" / "sub" / "mod.py").read_text() == "y = 1\n"
    assert "is a directory" in refused(tools, "write_file", path="src", content="x")
    assert "Not a directory" in refused(tools, "write_file", path="README.md/x", content="x")


# -- list_directory --------------------------------------------------------------------------


def test_list_directory_shows_types_and_sizes_and_skips_git(root: Path) -> None:
    (root / "link").symlink_to("README.md")
    tools = Tools(root)
    top = call(tools, "list_directory")
    assert top["path"] == "."
    assert top["entries"] == [
        {"name": "README.md", "type": "file", "size": 27},
        {"name": "link", "type": "link", "size": None},
        {"name": "src", "type": "dir", "size": None},
    ]
    deep = call(tools, "list_directory", path=".", depth=2)
    assert {"name": "src/app.py", "type": "file", "size": 41} in deep["entries"]
    assert call(tools, "list_directory", path="src")["entries"][0]["name"] == "app.py"
    assert "is a file" in refused(tools, "list_directory", path="README.md")
    assert "no directory" in refused(tools, "list_directory", path="missing")
    assert "depth must be 1 or more" in refused(tools, "list_directory", depth=0)


def test_list_directory_is_capped(root: Path) -> None:
    many = root / "many"
    many.mkdir()
    for n in range(30):
        (many / f"f{n:03}.txt").write_text("")
    result = call(Tools(root, Limits(output_cap=500)), "list_directory", path="many")
    assert result["truncated"] is True
    assert [entry["name"] for entry in result["entries"]] == [f"f{n:03}.txt" for n in range(10)]
    assert call(Tools(root), "list_directory", path="many")["truncated"] is False


# -- run_command -----------------------------------------------------------------------------


def test_run_command_merges_output_and_reports_the_exit_code(root: Path) -> None:
    tools = Tools(root)
    ok = call(tools, "run_command", command="pwd; echo out; echo err >&2")
    assert ok == {
        "tool": "run_command",
        "ok": True,
        "exit_code": 0,
        "output": f"{root}\nout\nerr\n",
        "timed_out": False,
        "truncated": False,
        "error": None,
    }
    failed = call(tools, "run_command", command="cat missing.txt; exit 3")
    assert (failed["ok"], failed["exit_code"]) == (False, 3)
    assert "missing.txt" in failed["output"]
    assert failed["error"] == "the command exited with code 3"
    assert call(tools, "run_command", command="cat")["output"] == ""  # stdin is empty
    killed = call(tools, "run_command", command="kill -KILL $$")
    assert (killed["exit_code"], killed["error"]) == (-9, "the command was killed by SIGKILL")


def test_commands_do_not_see_the_model_credentials(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "tc-ticket-key-1234")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "tc-ticket-key-1234")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9/ollama/tc-ticket-key-1234")
    monkeypatch.setenv("PROJECT_SETTING", "kept")
    result = call(Tools(root), "run_command", command="env")
    assert result["ok"] is True
    assert "tc-ticket-key-1234" not in result["output"]
    assert "PROJECT_SETTING=kept" in result["output"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_timeout_kills_the_whole_process_group(root: Path) -> None:
    tools = Tools(root, Limits(command_timeout=30))
    started = time.monotonic()
    result = call(
        tools,
        "run_command",
        command="sleep 300 & echo $! > child.pid; trap '' TERM; echo started; sleep 300",
        timeout=0.5,
    )
    assert time.monotonic() - started < 5
    assert result["timed_out"] is True
    assert result["ok"] is False
    assert "did not finish within 0.5 seconds" in result["error"]
    assert result["output"] == "started\n"
    child = int((root / "child.pid").read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def test_background_processes_do_not_outlive_their_command(root: Path) -> None:
    started = time.monotonic()
    result = call(Tools(root), "run_command", command="sleep 300 & echo $! > child.pid; echo done")
    assert time.monotonic() - started < 3
    assert (result["ok"], result["output"]) == (True, "done\n")
    child = int((root / "child.pid").read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


def test_the_tool_timeout_cannot_exceed_the_limit(root: Path) -> None:
    result = call(
        Tools(root, Limits(command_timeout=0.3)), "run_command", command="sleep 5", timeout=60
    )
    assert result["timed_out"] is True
    assert "within 0.3 seconds" in result["error"]
    assert "positive number" in refused(Tools(root), "run_command", command="ls", timeout=0)
    for endless in ("nan", float("nan"), "inf"):
        error = refused(Tools(root), "run_command", command="ls", timeout=endless)
        assert "'timeout' of run_command must be a number" in error


def test_long_output_keeps_head_and_tail(root: Path) -> None:
    command = "echo FIRST; head -c 100000 /dev/zero | tr '\\0' x; echo; echo LAST"
    result = call(Tools(root, Limits(output_cap=1000)), "run_command", command=command)
    assert result["truncated"] is True
    assert result["output"].startswith("FIRST\nxxx")
    assert result["output"].endswith("xxx\nLAST\n")
    assert "bytes of output omitted" in result["output"]
    assert len(result["output"]) < 1100


# -- search_files ----------------------------------------------------------------------------


def test_search_files_finds_regex_matches_as_path_line_text(root: Path) -> None:
    (root / "src" / "util.py").write_text("import os\n\ndef greet_all(names):\n    pass\n")
    result = call(Tools(root), "search_files", pattern=r"def greet\w*")
    assert result == {
        "tool": "search_files",
        "ok": True,
        "pattern": r"def greet\w*",
        "path": ".",
        "literal": False,
        "matches": ["src/app.py:1:def greet(name):", "src/util.py:3:def greet_all(names):"],
        "truncated": False,
        "error": None,
    }


def test_search_files_falls_back_to_literal_text_for_an_invalid_regex(root: Path) -> None:
    result = call(Tools(root), "search_files", pattern="greet(name")
    assert result["literal"] is True
    assert result["matches"] == ["src/app.py:1:def greet(name):"]
    (root / "big.txt").write_text("a{99999999999}\n")
    huge = call(Tools(root), "search_files", pattern="a{99999999999}")
    assert (huge["literal"], huge["matches"]) == (True, ["big.txt:1:a{99999999999}"])


def test_search_files_skips_git_and_binary_files_and_filters_by_glob(root: Path) -> None:
    (root / "data.bin").write_bytes(b"\0\1greet\0")
    (root / "notes.txt").write_text("greet me\n")
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    (root / ".git" / "description").write_text("greet from the repository's own files\n")
    (root / "src" / ".git").write_text("gitdir: greet\n")  # a nested checkout's .git file
    tools = Tools(root)
    result = call(tools, "search_files", pattern="greet")
    assert result["matches"] == ["notes.txt:1:greet me", "src/app.py:1:def greet(name):"]
    assert call(tools, "search_files", pattern="greet", glob="*.py")["matches"] == [
        "src/app.py:1:def greet(name):"
    ]
    in_file = call(tools, "search_files", pattern="return", path="src/app.py")
    assert in_file["matches"] == ["src/app.py:2:    return 'hi ' + name"]
    assert "no file or directory" in refused(tools, "search_files", pattern="x", path="nope")


def test_search_files_skips_fifos_and_devices(root: Path) -> None:
    os.mkfifo(root / "pipe")
    (root / "dev-null").symlink_to("/dev/null")
    (root / "notes.txt").write_text("greet\n")
    result = call(Tools(root), "search_files", pattern="greet", path=".")
    assert result["matches"] == ["notes.txt:1:greet", "src/app.py:1:def greet(name):"]
    assert "not a regular file" in refused(Tools(root), "read_file", path="pipe")


def test_a_search_that_backtracks_for_ever_is_stopped(root: Path) -> None:
    (root / "a.txt").write_text("greet\n")
    (root / "b.txt").write_text("a" * 40 + "b\n")
    handler = signal.getsignal(signal.SIGALRM)  # pytest-timeout's, when it runs with signals
    timer = signal.getitimer(signal.ITIMER_REAL)[0]
    started = time.monotonic()
    result = call(Tools(root, Limits(command_timeout=0.5)), "search_files", pattern=r"(a+)+$|greet")
    assert time.monotonic() - started < 3
    assert result["ok"] is False
    assert result["error"].startswith("the search did not finish within 0.5 seconds")
    assert (result["matches"], result["truncated"]) == (["a.txt:1:greet"], True)
    assert call(Tools(root), "search_files", pattern="greet")["ok"] is True  # the timer is gone
    assert signal.getsignal(signal.SIGALRM) is handler  # put back, with its timer
    assert timer - 5 < signal.getitimer(signal.ITIMER_REAL)[0] <= timer


def test_search_files_is_capped(root: Path) -> None:
    (root / "many.txt").write_text("match\n" * 1000)
    result = call(Tools(root), "search_files", pattern="match")
    assert result["truncated"] is True
    assert len(result["matches"]) == 200


# -- arguments and schemas -------------------------------------------------------------------


def test_unknown_tools_and_bad_arguments_are_explained(root: Path) -> None:
    tools = Tools(root)
    assert "unknown tool 'bash'; the tools are: read_file" in refused(tools, "bash", cmd="ls")
    assert "read_file needs the argument 'path'" in refused(tools, "read_file")
    assert "unknown argument 'file'" in refused(tools, "read_file", path="a", file="b")
    error = refused(tools, "read_file", path="README.md", start_line="two")
    assert error == "the argument 'start_line' of read_file must be an integer, not \"two\""
    assert "must be a string" in refused(tools, "write_file", path="a.txt", content=["x"])
    assert "must be a string" in refused(tools, "run_command", command=True)
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert "must be a string, not [[[[" in refused(tools, "write_file", path="a", content=deep)
    bad = tools.run(ToolCall(id="c", name="read_file", arguments=["README.md"]))  # type: ignore[arg-type]
    assert bad == Observation(tool="read_file", ok=False, error=bad.error)
    assert "must be an object" in str(bad.error)


def test_schemas_describe_every_tool_for_the_model() -> None:
    tools = schemas()
    assert [entry["function"]["name"] for entry in tools] == list(NAMES) == list(TOOL_SPECS)
    by_name = {entry["function"]["name"]: entry for entry in tools}
    read = by_name["read_file"]
    assert read["type"] == "function"
    assert read["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": read_description("read_file", "path")},
            "start_line": {"type": "integer", "description": "First line to read (1-based)."},
            "end_line": {"type": "integer", "description": "Last line to read (inclusive)."},
        },
        "required": ["path"],
        "additionalProperties": False,
    }
    assert by_name["run_command"]["function"]["parameters"]["required"] == ["command"]
    assert by_name["search_files"]["function"]["parameters"]["required"] == ["pattern"]
    assert by_name["list_directory"]["function"]["parameters"]["required"] == []
    assert all(len(entry["function"]["description"]) > 40 for entry in tools)


def read_description(tool: str, param: str) -> str:
    return TOOL_SPECS[tool][1][param].description


def test_a_call_key_is_the_same_for_the_same_arguments() -> None:
    first = ToolCall(id="a", name="read_file", arguments={"path": "x", "start_line": 1})
    second = ToolCall(id="b", name="read_file", arguments={"start_line": 1, "path": "x"})
    assert first.key() == second.key()
    assert first.key() != ToolCall(id="c", name="read_file", arguments={"path": "y"}).key()
