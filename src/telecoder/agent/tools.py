"""The five tools, confined to the worktree; each call ends in an ``Observation``.

A model's mistake (a path outside the worktree, a missing file, bad arguments, a command that
times out) is an observation with ``ok: false`` and an ``error`` saying what to do instead,
never an exception: the loop sends it back to the model and goes on.

Every path is resolved (symbolic links at every component, ``..``) and must land inside the
worktree; a file is then opened one component at a time from the root with ``O_NOFOLLOW``, so a
link swapped in after the check fails instead of escaping. Writes into ``.git`` are refused
(hooks and config would run later, outside the agent's confinement). The sandbox around the
agent process is the first wall; these checks are the second, and they make the model's
mistakes readable.

Observation keys (stable: the model and the event parser read them). Every observation has
``tool``, ``ok`` and ``error`` (null when ``ok``); a refused call has only those three.

- ``read_file``: ``path``, ``content``, ``start_line``, ``end_line``, ``lines`` (the file's line
  count), ``truncated``;
- ``write_file``: ``path``, ``bytes`` (UTF-8 bytes written), ``created`` (the file is new);
- ``list_directory``: ``path``, ``entries`` (each ``name`` relative to ``path``, ``type`` one of
  file/dir/link/other, ``size`` in bytes for a file, else null), ``truncated``;
- ``run_command``: ``exit_code``, ``output`` (stdout and stderr merged), ``timed_out``,
  ``truncated``; ``ok`` is false when the command failed or timed out. Commands run without
  the agent's model credentials in their environment;
- ``search_files``: ``pattern``, ``path``, ``literal`` (the pattern was not a valid regular
  expression and was searched as plain text), ``matches`` (``path:line:text``), ``truncated``;
  ``ok`` is false when the search ran out of time (``Limits.command_timeout``).

CONTRACT (shared by the ``agent-tools`` and ``builtin`` branches; change it only together).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecoder.agent.command import run_shell, without_model_credentials
from telecoder.agent.search import BINARY_SNIFF, search
from telecoder.agent.specs import MAX_DEPTH, TOOL_SPECS, ArgumentError, check_arguments

NAMES = ("read_file", "write_file", "list_directory", "run_command", "search_files")

_LIST_CAP = 500  # entries one list_directory returns


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    id: str  # the model's call id (native calls), or one made up for a call parsed from text
    name: str
    arguments: Mapping[str, Any]

    def key(self) -> str:
        """The same tool with the same arguments gives the same key (repeated-call detection)."""
        return self.name + ":" + json.dumps(dict(self.arguments), sort_keys=True, default=str)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    tool: str
    ok: bool
    data: Mapping[str, Any] = field(default_factory=dict)  # e.g. content, entries, exit_code
    error: str | None = None  # what went wrong, addressed to the model

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "ok": self.ok, **self.data, "error": self.error}

    def to_json(self) -> str:
        """What the model is sent."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    command_timeout: float = 120.0  # seconds a run_command may take (its process group killed)
    output_cap: int = 30_000  # characters of any observation's text (head and tail kept)
    read_cap: int = 200_000  # bytes read_file reads at most


class _Refused(Exception):
    """A call the tools will not run; the message is the observation's ``error``."""


class Tools:
    """The tools over one worktree (``root``)."""

    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.root = root.resolve()
        self.limits = limits or Limits()

    def run(self, call: ToolCall) -> Observation:
        """Run one call; never raises for anything the model did."""
        handlers: dict[str, Callable[..., Observation]] = {
            "read_file": self._read_file,
            "write_file": self._write_file,
            "list_directory": self._list_directory,
            "run_command": self._run_command,
            "search_files": self._search_files,
        }
        try:
            arguments = check_arguments(call.name, call.arguments)
            return handlers[call.name](**arguments)
        except (_Refused, ArgumentError) as refused:
            return Observation(tool=call.name, ok=False, error=str(refused))
        except OSError as error:
            return Observation(tool=call.name, ok=False, error=self._os_error(error))

    # -- paths -------------------------------------------------------------------------------

    def _resolve(self, raw: str, *, write: bool = False) -> Path:
        """``raw`` as a real path inside the root, or ``_Refused`` saying what is allowed."""
        if "\0" in raw:
            raise _Refused(f"the path {_quoted(raw)} contains a NUL byte; give a plain path")
        if not raw.strip():
            raise _Refused("the path is empty; give a path relative to the worktree root")
        candidate = Path(raw) if os.path.isabs(raw) else self.root / raw
        resolved = Path(os.path.realpath(candidate))
        if not resolved.is_relative_to(self.root):
            lexical = Path(os.path.normpath(candidate))
            why = (
                "goes through a symbolic link that points outside the worktree"
                if lexical.is_relative_to(self.root)
                else "is outside the worktree"
            )
            raise _Refused(
                f"the path {_quoted(raw)} {why}; only paths inside the worktree ({self.root}) "
                "can be used: give a path relative to it, e.g. 'src/main.py'"
            )
        if write and ".git" in resolved.relative_to(self.root).parts:
            raise _Refused(
                f"the path {_quoted(raw)} is inside .git, which cannot be written; "
                "write the project's own files and use git commands through run_command"
            )
        return resolved

    def _show(self, path: Path) -> str:
        """A resolved path as the model should write it: relative to the root."""
        relative = path.relative_to(self.root)
        return relative.as_posix() if relative.parts else "."

    def _os_error(self, error: OSError) -> str:
        name = error.filename
        where = ""
        if isinstance(name, str):
            shown = Path(name)
            where = f": {self._show(shown) if shown.is_relative_to(self.root) else name}"
        return f"{error.strerror or error}{where}"

    # -- the tools ---------------------------------------------------------------------------

    def _read_file(
        self, path: str, start_line: int | None = None, end_line: int | None = None
    ) -> Observation:
        target = self._resolve(path)
        first = 1 if start_line is None else start_line
        if first < 1 or (end_line is not None and end_line < first):
            raise _Refused(
                f"invalid line range {first}..{end_line}: start_line is 1 or more and "
                "end_line is not before it"
            )
        fd = self._open_regular(target, path)
        with os.fdopen(fd, "rb") as handle:
            if b"\0" in handle.read(BINARY_SNIFF):
                raise _Refused(f"{_quoted(path)} is a binary file; only text files can be read")
            handle.seek(0)
            chunks: list[bytes] = []
            used, count, capped = 0, 0, False
            for count, line in enumerate(handle, start=1):
                if count < first or (end_line is not None and count > end_line) or capped:
                    continue
                if used >= self.limits.read_cap:
                    capped = True
                    continue
                piece = line[: self.limits.read_cap - used]
                capped = len(piece) < len(line)
                chunks.append(piece)
                used += len(piece)
        if count and first > count:
            raise _Refused(f"{_quoted(path)} has {count} lines; start_line {first} is past its end")
        content = b"".join(chunks).decode("utf-8", errors="replace")
        if capped:
            content += (
                f"\n[... read stopped after {self.limits.read_cap} bytes; "
                "read further with start_line/end_line ...]"
            )
        content, cut = _cap(content, self.limits.output_cap, "read a smaller line range")
        last = first + len(chunks) - 1 if chunks else first - 1
        return Observation(
            tool="read_file",
            ok=True,
            data={
                "path": self._show(target),
                "content": content,
                "start_line": first,
                "end_line": last,
                "lines": count,
                "truncated": capped or cut,
            },
        )

    def _open_regular(self, target: Path, raw: str) -> int:
        """A read-only descriptor of the regular file ``target``, or ``_Refused``."""
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            raise _Refused(
                f"no file {_quoted(raw)}; list_directory or search_files show what exists"
            ) from None
        if stat.S_ISDIR(mode):
            raise _Refused(f"{_quoted(raw)} is a directory; use list_directory to see its entries")
        if not stat.S_ISREG(mode):
            raise _Refused(f"{_quoted(raw)} is not a regular file")
        fd = self._open_beneath(target, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # it changed between the check and the open
            os.close(fd)
            raise _Refused(f"{_quoted(raw)} is not a regular file")
        return fd

    def _open_beneath(self, target: Path, flags: int, *, create: bool = False) -> int:
        """Open ``target`` (resolved, inside the root) one component at a time from the root,
        following no link: a link swapped in after ``_resolve``'s check fails the open (ELOOP,
        ENOTDIR) instead of leading out. ``create``: make the missing directories on the way."""
        parts = target.relative_to(self.root).parts
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(target))
        directory = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root, directory)
        try:
            for part in parts[:-1]:
                try:
                    inner = os.open(part, directory, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    inner = os.open(part, directory, dir_fd=fd)
                os.close(fd)
                fd = inner
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        finally:
            os.close(fd)

    def _write_file(self, path: str, content: str) -> Observation:
        target = self._resolve(path, write=True)
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused("the content is not valid text (it has lone surrogates)") from None
        if target.is_dir():
            raise _Refused(f"{_quoted(path)} is a directory; give a file path")
        created = not target.exists()
        fd = self._open_beneath(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create=True)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return Observation(
            tool="write_file",
            ok=True,
            data={"path": self._show(target), "bytes": len(data), "created": created},
        )

    def _list_directory(self, path: str = ".", depth: int = 1) -> Observation:
        target = self._resolve(path)
        if not target.exists():
            raise _Refused(
                f"no directory {_quoted(path)}; list '.' to see the worktree's top level"
            )
        if not target.is_dir():
            raise _Refused(f"{_quoted(path)} is a file, not a directory; use read_file to read it")
        if depth < 1:
            raise _Refused(f"depth must be 1 or more (at most {MAX_DEPTH}), not {depth}")
        entries: list[dict[str, Any]] = []
        budget = self.limits.output_cap
        truncated = False
        for entry in _walk(target, min(depth, MAX_DEPTH)):
            budget -= len(entry["name"]) + 40  # about what one entry costs as JSON
            if len(entries) >= _LIST_CAP or budget < 0:
                truncated = True
                break
            entries.append(entry)
        return Observation(
            tool="list_directory",
            ok=True,
            data={"path": self._show(target), "entries": entries, "truncated": truncated},
        )

    def _run_command(self, command: str, timeout: float | None = None) -> Observation:
        if not command.strip():
            raise _Refused("the command is empty; give a shell command, e.g. 'ls -la'")
        if timeout is not None and timeout <= 0:
            raise _Refused(f"timeout must be a positive number of seconds, not {timeout}")
        limit = self.limits.command_timeout
        limit = limit if timeout is None else min(timeout, limit)
        result = run_shell(
            command,
            cwd=self.root,
            timeout=limit,
            cap=self.limits.output_cap,
            env=without_model_credentials(os.environ),
        )
        error = None
        if result.timed_out:
            error = (
                f"the command did not finish within {limit:g} seconds and was killed "
                "(with every process it started); run something shorter, or limit it"
            )
        elif result.exit_code < 0:
            error = f"the command was killed by {_signal_name(-result.exit_code)}"
        elif result.exit_code != 0:
            error = f"the command exited with code {result.exit_code}"
        return Observation(
            tool="run_command",
            ok=error is None,
            data={
                "exit_code": result.exit_code,
                "output": result.output,
                "timed_out": result.timed_out,
                "truncated": result.truncated,
            },
            error=error,
        )

    def _search_files(self, pattern: str, path: str = ".", glob: str | None = None) -> Observation:
        if not pattern:
            raise _Refused("the pattern is empty; give a regular expression or a word to find")
        literal = False
        try:
            regex = re.compile(pattern)
        except (re.error, OverflowError, RecursionError):
            regex, literal = re.compile(re.escape(pattern)), True
        target = self._resolve(path)
        if not target.exists():
            raise _Refused(
                f"no file or directory {_quoted(path)}; search '.' for the whole worktree"
            )
        found = search(
            target,
            regex,
            glob=glob,
            show=self._show,
            cap=self.limits.output_cap,
            seconds=self.limits.command_timeout,
        )
        error = None
        if found.timed_out:
            error = (
                f"the search did not finish within {self.limits.command_timeout:g} seconds "
                "(matches so far are shown); narrow it with path or glob, or simplify the pattern"
            )
        return Observation(
            tool="search_files",
            ok=error is None,
            data={
                "pattern": pattern,
                "path": self._show(target),
                "literal": literal,
                "matches": found.matches,
                "truncated": found.truncated,
            },
            error=error,
        )


def schemas() -> list[dict[str, Any]]:
    """The five tools as OpenAI ``tools`` entries (``{"type": "function", "function": ...}``)."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        param: {"type": spec.type, "description": spec.description}
                        for param, spec in params.items()
                    },
                    "required": [param for param, spec in params.items() if spec.required],
                    "additionalProperties": False,
                },
            },
        }
        for name, (description, params) in TOOL_SPECS.items()
    ]


# -- helpers -----------------------------------------------------------------------------------


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _quoted(path: str) -> str:
    """A path the model gave, quoted for a message (a long one cut: it goes back to the model)."""
    return repr(path if len(path) <= 200 else path[:200] + "...")


def _cap(text: str, cap: int, hint: str) -> tuple[str, bool]:
    """``text`` cut to about ``cap`` characters, keeping its head and tail; and whether it was."""
    if len(text) <= cap:
        return text, False
    head = cap - cap // 2
    tail = cap // 2
    omitted = len(text) - head - tail
    return (
        f"{text[:head]}\n[... {omitted} characters omitted; {hint} ...]\n{text[-tail:]}",
        True,
    )


def _walk(directory: Path, depth: int, prefix: str = "") -> Iterator[dict[str, Any]]:
    """The entries under ``directory`` (depth-first, sorted), without .git and without following
    symbolic links."""
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name == ".git":
            continue
        name = prefix + entry.name
        if entry.is_symlink():
            yield {"name": name, "type": "link", "size": None}
        elif entry.is_dir(follow_symlinks=False):
            yield {"name": name, "type": "dir", "size": None}
            if depth > 1:
                yield from _walk(Path(entry.path), depth - 1, name + "/")
        elif entry.is_file(follow_symlinks=False):
            size = entry.stat(follow_symlinks=False).st_size
            yield {"name": name, "type": "file", "size": size}
        else:
            yield {"name": name, "type": "other", "size": None}
