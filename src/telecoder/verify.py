"""Setup and verification: a repository's commands, run in the worktree before and after the
agent, one report each.

The commands of ``verify:`` and ``command_succeeds:`` run through the runtime like the agent: in
the worktree, in their own process group, stdin from /dev/null, with the environment the pipeline
gives (the operator's allow-listed variables only: no model keys, no forge token), each within
``verify_timeout`` (``setup_timeout`` for ``setup:``). ``file_exists`` and ``git_clean`` are
looked at directly.

Checks never change the branch: the worktree is snapshotted before they run (a tree object made
with a private index) and put back afterwards, so test caches, build output or a formatter's
rewrites are not committed. ``git_clean: true`` fails when the checks before it changed anything
that would have been. A check runs the repository's code, which can reach the mirror through the
worktree like the agent can: git's own files are made safe again (``Workspace.sanitize``) before
each git command on the host that follows a check.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telecoder.protocols import Confinement, Process, Runtime
from telecoder.repoconfig import CommandSucceeds, FileExists, RepoConfig
from telecoder.workspace import Workspace, Worktree

TAIL_LINES = 40
TAIL_CHARS = 4000
LINE_CHARS = 2000  # of one line kept for the tail
SETUP_CLEAN = "nothing left to commit"
SUMMARY_LINES = 15  # of a failed check's output, in the session's error
MAX_TESTS_NAMED = 10

# Terminal escapes (colours, cursor moves, titles): test runners print them even when piped.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# How the usual test runners name a failing test, one per line.
_FAILING = (
    re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)"),  # pytest's short summary
    re.compile(r"^(?:FAIL|ERROR): (\w+ \([\w.]+\))"),  # unittest
    re.compile(r"^\s*--- FAIL: (\S+)"),  # go test
    re.compile(r"^test (\S+) \.\.\. FAILED$"),  # cargo test
    re.compile(r"^\s*(?:✕|×) (.+?)(?: \(\d+ m?s\))?$"),  # jest, vitest
)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def failing_tests(output: str) -> list[str]:
    """The tests a runner's output says failed, in order, each once."""
    found: dict[str, None] = {}
    for line in output.splitlines():
        for pattern in _FAILING:
            if match := pattern.match(line):
                found[match.group(1)] = None
                break
    return list(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    """One check's result, as recorded in a ``verify`` event."""

    command: str  # the command, or the check as written (``file_exists: PATH``)
    kind: str  # verify, command_succeeds, file_exists or git_clean
    ok: bool
    exit_code: int | None
    duration_ms: int
    output_tail: str
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "kind": self.kind,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "output_tail": self.output_tail,
            "timed_out": self.timed_out,
        }

    def describe(self) -> str:
        """One line: what failed and how."""
        if self.kind == "file_exists":
            return f"{self.command}: {self.output_tail}"
        if self.kind == "git_clean":
            return f"{self.command}: the checks changed files"
        if self.timed_out:
            return f"`{self.command}` did not finish in time"
        return f"`{self.command}` exited with status {self.exit_code}"


class Verifier:
    def __init__(self, *, runtime: Runtime, workspace: Workspace, grace: float = 5.0) -> None:
        self.runtime = runtime
        self.workspace = workspace
        self.grace = grace

    async def run(
        self,
        config: RepoConfig,
        wt: Worktree,
        *,
        env: Mapping[str, str],
        stopped: Callable[[], Awaitable[object]],
        report: Callable[[CheckReport], None],
        confinement: Confinement | None = None,
    ) -> list[CheckReport]:
        """Run every check of ``config`` in ``wt``; ``report`` hears of each as it ends.

        Returns early (without putting the worktree back) when ``stopped`` completes: the
        attempt is over, its worktree will be discarded.
        """
        snapshot = await self.workspace.snapshot(wt)
        reports: list[CheckReport] = []

        def done(result: CheckReport) -> None:
            reports.append(result)
            report(result)

        timeout = config.verify_timeout
        for command in config.verify:
            done(await self._command(command, "verify", wt, env, timeout, stopped, confinement))
        for check in config.checks:
            if isinstance(check, FileExists):
                done(_file_exists(wt.path, check.file_exists))
            elif isinstance(check, CommandSucceeds):
                result = await self._command(
                    check.command_succeeds,
                    "command_succeeds",
                    wt,
                    env,
                    timeout,
                    stopped,
                    confinement,
                )
                done(result)
            else:
                done(await self._unchanged("git_clean: true", "git_clean", wt, snapshot))
        await self.workspace.sanitize(wt)
        await self.workspace.restore(wt, snapshot)
        return reports

    async def setup(
        self,
        config: RepoConfig,
        wt: Worktree,
        *,
        env: Mapping[str, str],
        stopped: Callable[[], Awaitable[object]],
        report: Callable[[CheckReport], None],
        confinement: Confinement | None = None,
        output: Callable[[str, str], None] | None = None,
    ) -> CheckReport | None:
        """Run the ``setup:`` commands in ``wt`` until one fails; the failure, else None.

        ``output`` hears each line a command prints (stream, text), as it prints it. What setup
        installs must land in ignored paths: a setup that leaves a file that would be committed
        fails (the agent's branch holds the agent's work only).
        """
        snapshot = await self.workspace.snapshot(wt)
        for command in config.setup:
            result = await self._command(
                command, "setup", wt, env, config.setup_timeout, stopped, confinement, output
            )
            report(result)
            if not result.ok:
                return result
        result = await self._unchanged(SETUP_CLEAN, "setup", wt, snapshot)
        report(result)
        return None if result.ok else result

    async def _unchanged(self, label: str, kind: str, wt: Worktree, snapshot: str) -> CheckReport:
        """Whether every file that would be committed is as it was at ``snapshot``."""
        started = time.monotonic()
        await self.workspace.sanitize(wt)
        changed = await self.workspace.changed_since(wt, snapshot)
        return CheckReport(
            command=label,
            kind=kind,
            ok=not changed,
            exit_code=0 if not changed else 1,
            duration_ms=_ms(started),
            output_tail="\n".join(changed[:TAIL_LINES]),
        )

    async def _command(
        self,
        command: str,
        kind: str,
        wt: Worktree,
        env: Mapping[str, str],
        limit: float,
        stopped: Callable[[], Awaitable[object]],
        confinement: Confinement | None = None,
        output: Callable[[str, str], None] | None = None,
    ) -> CheckReport:
        started = time.monotonic()
        process = await self.runtime.spawn(
            ["/bin/sh", "-c", command],
            cwd=wt.path,
            env=env,
            stdin=None,
            interactive=False,
            confinement=confinement,
        )
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        reading = asyncio.create_task(_collect(process, tail, output))
        stopping = asyncio.ensure_future(stopped())
        timed_out = False
        try:
            await asyncio.wait({reading, stopping}, timeout=limit, return_when="FIRST_COMPLETED")
            if reading.done():
                code: int | None = await process.wait()
            else:
                timed_out = not stopping.done()
                code = await process.stop(self.grace)
                if not timed_out:
                    code = None
        finally:
            for task in (reading, stopping):
                task.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)
        text = "\n".join(tail)[-TAIL_CHARS:]
        if timed_out:
            text += f"\n[stopped after {limit:g} s]"
        return CheckReport(
            command=command,
            kind=kind,
            ok=code == 0 and not timed_out,
            exit_code=code,
            duration_ms=_ms(started),
            output_tail=text.strip("\n"),
            timed_out=timed_out,
        )


async def _collect(
    process: Process, tail: deque[str], output: Callable[[str, str], None] | None = None
) -> None:
    async for stream, raw in process.lines():
        line = raw[: LINE_CHARS * 4].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
        line = strip_ansi(line)
        line = line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " …"
        tail.append(line)
        if output is not None:
            output(stream, line)


def _file_exists(root: Path, rel: str) -> CheckReport:
    started = time.monotonic()
    base = root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(base):
        ok, detail = False, "the path is outside the repository"
    else:
        ok = target.exists()
        detail = "" if ok else "no such file"
    return CheckReport(
        command=f"file_exists: {rel}",
        kind="file_exists",
        ok=ok,
        exit_code=0 if ok else 1,
        duration_ms=_ms(started),
        output_tail=detail,
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def revision_prompt(failed: Sequence[CheckReport]) -> str:
    """What the agent is told when its work does not pass the repository's checks."""
    parts = [
        "Your changes do not pass this repository's checks (from .telecoder.yml). "
        "Fix the code so that every check below passes. Do not weaken, skip or delete "
        "the checks themselves.",
        "",
    ]
    for report in failed:
        parts.append(f"FAILED: {report.describe()}")
        if tests := failing_tests(report.output_tail):
            parts.append(f"Failing tests: {', '.join(tests[:MAX_TESTS_NAMED])}")
        if report.output_tail:
            parts += ["```", report.output_tail[-2000:], "```"]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def failure_summary(failed: Sequence[CheckReport], revisions: int, *, resumable: bool) -> str:
    """The session's error when the checks still fail."""
    count = f"{len(failed)} check{'s' if len(failed) != 1 else ''}"
    if not resumable:
        head = f"{count} failed (the engine cannot be resumed to revise its work)"
    elif revisions:
        head = f"{count} still failing after {revisions} revision{'s' if revisions != 1 else ''}"
    else:
        head = f"{count} failed (max_revisions is 0)"
    lines = [f"verification failed: {head}; nothing was pushed"]
    for report in failed:
        tail = report.output_tail.strip().splitlines() if report.output_tail else []
        last = tail[-1:]
        lines.append(f"- {report.describe()}" + (f": {last[0][:300]}" if last else ""))
        tests = failing_tests(report.output_tail)
        if tests:
            more = len(tests) - MAX_TESTS_NAMED
            named = ", ".join(tests[:MAX_TESTS_NAMED]) + (f" and {more} more" if more > 0 else "")
            lines.append(f"  failing tests: {named}")
        if len(tail) > 1:  # its output (the last line is above)
            lines += ["  output:", *(f"    {line[:300]}" for line in tail[-SUMMARY_LINES:])]
    return "\n".join(lines)


def setup_failure(report: CheckReport) -> str:
    """The session's error when setup fails: the agent never ran."""
    if report.command == SETUP_CLEAN:
        files = report.output_tail.splitlines()
        listed = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        return (
            f"setup failed: it left files that would be committed ({listed}); install into "
            "ignored paths (.gitignore) so the branch holds the agent's work only"
        )
    last = report.output_tail.strip().splitlines()[-1:] if report.output_tail else []
    return f"setup failed: {report.describe()}" + (f": {last[0][:300]}" if last else "")
