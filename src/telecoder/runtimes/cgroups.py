"""A control group per sandbox, where the machine lets TeleCoder make one: a memory and a
process-count limit, and an exact list of what to kill at the end.

cgroup v2 (a unified hierarchy with the controllers delegated to TeleCoder's own group) and v1
(the ``memory`` and ``pids`` hierarchies, as root) both work; where neither can be written the
sandbox runs without one and says so (``Cgroup.create`` returns None). The sandbox's first
processes are moved in (``add``) before its command starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
POOL_SIZE = 16  # emptied groups kept for the next sandboxes: a first move into a new one is slow

_pool: dict[tuple[int | None, int | None], list[Cgroup]] = {}


def _own_groups() -> dict[str, str]:
    """This process's group in each hierarchy: controller (``""`` for v2) -> path."""
    groups: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                groups[name] = path
    return groups


@dataclass(slots=True)
class Cgroup:
    dirs: list[Path]  # one per hierarchy the sandbox is limited in
    limits: tuple[int | None, int | None] | None = None  # (memory, pids), for reuse

    @classmethod
    def create(cls, name: str, *, memory_bytes: int | None, pids: int | None) -> Cgroup | None:
        """A new group ``name`` with the limits, or None when none can be made here."""
        if memory_bytes is None and pids is None:
            return None
        idle = _pool.get((memory_bytes, pids))
        if idle:
            return idle.pop()
        groups = _own_groups()
        if (ROOT / "cgroup.controllers").exists():
            return cls._v2(groups.get("", "/"), name, memory_bytes, pids)
        return cls._v1(groups, name, memory_bytes, pids)

    @classmethod
    def _v2(cls, own: str, name: str, memory: int | None, pids: int | None) -> Cgroup | None:
        parent = ROOT / own.lstrip("/") / "telecoder"
        try:
            parent.mkdir(exist_ok=True)
            wanted = [c for c, v in (("memory", memory), ("pids", pids)) if v is not None]
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
            group = parent / name
            group.mkdir()
            if memory is not None:
                (group / "memory.max").write_text(str(memory))
                with contextlib.suppress(OSError):
                    (group / "memory.swap.max").write_text("0")
            if pids is not None:
                (group / "pids.max").write_text(str(pids))
        except OSError as e:
            log.debug("no cgroup v2 for the sandbox: %s", e)
            return None
        return cls([group], (memory, pids))

    @classmethod
    def _v1(
        cls, groups: dict[str, str], name: str, memory: int | None, pids: int | None
    ) -> Cgroup | None:
        made: list[Path] = []
        try:
            for controller, limit, file in (
                ("memory", memory, "memory.limit_in_bytes"),
                ("pids", pids, "pids.max"),
            ):
                if limit is None or controller not in groups:
                    continue
                group = ROOT / controller / groups[controller].lstrip("/") / f"telecoder-{name}"
                group.mkdir()
                made.append(group)
                (group / file).write_text(str(limit))
                if controller == "memory":
                    with contextlib.suppress(OSError):
                        (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError as e:
            log.debug("no cgroup v1 for the sandbox: %s", e)
            for group in made:
                with contextlib.suppress(OSError):
                    group.rmdir()
            return None
        return cls(made, (memory, pids)) if made else None

    def add(self, pids: list[int]) -> None:
        """Move processes into the group (what they start later is in it too); one that has
        ended meanwhile is skipped."""
        for group in self.dirs:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    (group / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for group in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
        return sorted(found)

    def destroy(self) -> None:
        """Kill whatever is left in the group; keep it for the next sandbox, or remove it."""
        deadline = time.monotonic() + 5.0
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        if self.limits is not None and not self.pids() and not self.oom_killed():
            idle = _pool.setdefault(self.limits, [])
            if len(idle) < POOL_SIZE:
                idle.append(self)
                return
        for group in self.dirs:
            with contextlib.suppress(OSError):
                group.rmdir()

    def oom_killed(self) -> bool:
        """Whether the kernel killed something in the group for want of memory."""
        for group in self.dirs:
            for file, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                with contextlib.suppress(OSError):
                    for line in (group / file).read_text().splitlines():
                        name, _, value = line.partition(" ")
                        if name == key and value.strip() not in ("", "0"):
                            return True
        return False
