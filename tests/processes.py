"""Looking at processes through /proc: alive (zombies count as gone), process group members."""

from __future__ import annotations

from pathlib import Path


def _state(pid: int) -> str | None:
    """The process's state letter, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes in the process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def working_in(path: Path) -> list[int]:
    """Live processes whose current directory is ``path`` or below it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            cwd = (entry / "cwd").resolve()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if cwd == path or path in cwd.parents:
            found.append(int(entry.name))
    return found


def with_marker(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (processes in a sandbox have pids
    of their own namespace: they are found by what they run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found
