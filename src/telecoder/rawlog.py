"""Raw logs: every line an agent CLI printed, as it printed it, for debugging an engine.

The event stream holds what a person reads (messages, tool calls, usage, ...); the raw log holds
everything, including the JSON lines an engine does not map, so a surprising run can be looked at
afterwards with ``telecoder logs ID --raw``. One JSON Lines file per attempt on the host that ran
it, ``$TELECODER_HOME/logs/<session>/<attempt>.jsonl``: ``{"t", "stream", "line"}`` records, a
``{"t", "run"}`` record before each run of the agent (a revision or a chat turn is a new run).
A file stops growing at ``MAX_BYTES``; logs older than the retention are removed by the worker.
Lines are masked (``Masker``) before they are written: a secret an agent prints is not kept.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from telecoder import private
from telecoder.masking import Masker

MAX_BYTES = 32 * 1024 * 1024


def path(root: Path, session_id: str, attempt: int) -> Path:
    return root / session_id / f"{attempt}.jsonl"


class RawLog:
    """Appends one run's lines to its attempt's file, up to ``max_bytes``."""

    def __init__(
        self, file: Path, *, run: int, max_bytes: int = MAX_BYTES, masker: Masker | None = None
    ) -> None:
        self._masker = masker or Masker()
        private.make_dir(file.parent)
        self._file: IO[str] = private.open_append(file)
        self._size = file.stat().st_size
        self._max = max_bytes
        self._full = False
        self._write({"t": time.time(), "run": run})

    def line(self, stream: str, text: str) -> None:
        self._write({"t": time.time(), "stream": stream, "line": self._masker.text(text)})

    def close(self) -> None:
        self._file.close()

    def _write(self, record: dict[str, Any]) -> None:
        if self._full:
            return
        data = json.dumps(record, ensure_ascii=False) + "\n"
        if self._size + len(data) > self._max:
            self._full = True
            data = json.dumps({"t": time.time(), "truncated": self._max}) + "\n"
        self._file.write(data)
        self._size += len(data)


def read(root: Path, session_id: str, attempt: int | None = None) -> Iterator[dict[str, Any]]:
    """The records of one attempt, or of every attempt in order (each with its ``attempt``)."""
    folder = root / session_id
    files = sorted(folder.glob("*.jsonl"), key=lambda p: int(p.stem)) if folder.is_dir() else []
    for file in files:
        number = int(file.stem)
        if attempt is not None and number != attempt:
            continue
        with file.open(encoding="utf-8", errors="backslashreplace") as f:
            for text in f:
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                yield {"attempt": number, **record}


def sweep(root: Path, keep_seconds: float, now: float | None = None) -> list[str]:
    """Remove the logs of sessions not written to for ``keep_seconds``; their ids."""
    if not root.is_dir():
        return []
    cutoff = (now if now is not None else time.time()) - keep_seconds
    removed = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        try:
            times = [f.stat().st_mtime for f in folder.glob("*.jsonl")]
            newest = max(times, default=folder.stat().st_mtime)
        except FileNotFoundError:
            continue  # removed meanwhile
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed
