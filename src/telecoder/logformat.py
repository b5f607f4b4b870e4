"""How TeleCoder's log lines look: text (the default) or JSON (``TELECODER_LOG_FORMAT=json``).

JSON: one object per line — ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg``, and when
known ``session_id`` (the session the current task works on: ``SESSION_ID``, set by the worker
around each attempt, or a record's ``extra={"session_id": …}``) and ``exc`` (the traceback).
Every known secret is masked in ``msg`` and ``exc`` by the ``Masker`` given (the same one the
masking filter uses), so a record that skipped the filter is masked too.

A log file (``TELECODER_LOG_FILE``): the same lines also go to a file that TeleCoder rotates
itself (``logging.handlers.RotatingFileHandler``: at ``TELECODER_LOG_MAX_BYTES``, to ``FILE.1`` …
``FILE.<TELECODER_LOG_BACKUPS>``), so no logrotate rule is needed; processes may share it.
"""

from __future__ import annotations

import contextvars
import fcntl
import io
import json
import logging
import logging.handlers
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

# The session whose attempt the current asyncio task (and the tasks it starts) works on.
SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "telecoder_session_id", default=None
)


class JsonFormatter(logging.Formatter):
    def __init__(self, mask: Callable[[str], str] = lambda text: text) -> None:
        super().__init__()
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._mask(record.getMessage()),
        }
        session_id = getattr(record, "session_id", None) or SESSION_ID.get()
        if session_id:
            line["session_id"] = session_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = self._mask(record.exc_text)
        if record.stack_info:
            line["stack"] = self._mask(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def use_json(mask: Callable[[str], str], loggers: Iterable[str] = ("", "uvicorn")) -> None:
    """Give every handler of the root logger and of ``loggers`` (and their children) the JSON
    formatter. Called after logging is configured (and again once uvicorn configured its own)."""
    names = [
        n
        for n in logging.Logger.manager.loggerDict
        if any(n == prefix or n.startswith(f"{prefix}.") for prefix in loggers if prefix)
    ]
    for name in ["", *names]:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter(mask))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Its files, the rotated ones too, are the owner's alone (a log may name hosts, paths).

    Several processes may write one file (a server and its workers given the same
    ``TELECODER_LOG_FILE``): every write is an append, a process that finds the file rotated by
    another reopens it before it writes, and one process at a time rotates (under a lock on
    ``.FILE.lock`` beside it), looking again under the lock whether another has just done it."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        if self._moved():
            self._reopen()
        super().emit(record)

    def doRollover(self) -> None:
        base = Path(self.baseFilename)
        fd = os.open(base.with_name(f".{base.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._moved():  # another process rotated it
                self._reopen()
                return
            super().doRollover()
        finally:
            os.close(fd)  # the lock goes with it

    def _moved(self) -> bool:
        """Whether the file at the path is no longer the one this process writes."""
        if self.stream is None:
            return False
        try:
            there = os.stat(self.baseFilename)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.stream.fileno())
        return (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino)

    def _reopen(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.stream = self._open()


def log_to_file(
    path: Path, *, max_bytes: int, backups: int, loggers: Iterable[str] = ("uvicorn",)
) -> logging.Handler:
    """Also write the root logger's records (and those of ``loggers`` that do not propagate,
    like uvicorn's) to ``path``, rotated at ``max_bytes`` with ``backups`` old files kept.
    Called before the masking filter and the JSON formatter are installed: they cover it too.
    Once per process: a second call returns the handler the first one added."""
    path = path.expanduser().absolute()
    root = logging.getLogger()
    for handler in root.handlers:
        rotating = isinstance(handler, logging.handlers.RotatingFileHandler)
        if rotating and Path(handler.baseFilename) == path:  # type: ignore[attr-defined]
            _also_on(handler, loggers)
            return handler
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = PrivateRotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    _also_on(handler, loggers)
    return handler


def _also_on(handler: logging.Handler, loggers: Iterable[str]) -> None:
    for name in loggers:
        if name not in logging.Logger.manager.loggerDict:
            continue
        logger = logging.getLogger(name)
        if not logger.propagate and handler not in logger.handlers:
            logger.addHandler(handler)
