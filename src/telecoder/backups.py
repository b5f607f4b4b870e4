"""Backups of the store, on either database, once or on a schedule with retention.

- :func:`backup` / :func:`restore`: SQLite through its online backup API (``store.backup``),
  PostgreSQL through ``pg_dump`` / ``pg_restore`` (``store.pgbackup``).
- :func:`backup_into`: a file named by its UTC time in a directory
  (``telecoder-20260101T030000Z.dump``, ``.db`` on SQLite), then the oldest such files beyond
  ``keep`` deleted. Only files of that pattern are ever deleted.
- :class:`BackupSchedule`: ``TELECODER_BACKUP_SCHEDULE`` (cron, ``@daily``, ``@every 6h``) in
  ``telecoder serve``. Each due slot is claimed in the jobs' slot table (under a name no job can
  have), so however many servers run, one of them backs up per slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from telecoder.errors import BadInput
from telecoder.jobs import Schedule
from telecoder.settings import Settings
from telecoder.store import Store, pgbackup
from telecoder.store import backup as sqlite_backup
from telecoder.store.backup import Snapshot
from telecoder.store.db import Database
from telecoder.store.migrations import current_revision

log = logging.getLogger(__name__)

SLOT_NAME = ":backup"  # in job_slots: job names cannot start with ':'
_STAMP = "%Y%m%dT%H%M%SZ"
_NAMED = re.compile(r"^telecoder-(\d{8}T\d{6}Z)(?:-(\d+))?\.(db|dump)$")


async def backup(db: Database, target: Path) -> Snapshot:
    if db.is_sqlite:
        return await sqlite_backup.backup(db, target)
    return await pgbackup.backup(db, target, revision=await current_revision(db))


async def restore(db: Database, source: Path, *, head: str) -> Snapshot:
    if db.is_sqlite:
        return await sqlite_backup.restore(db, source, head=head)
    return await pgbackup.restore(db, source, head=head)


def kept(directory: Path) -> list[Path]:
    """The directory's backups (by name), oldest first."""
    if not directory.is_dir():
        return []
    found = [(m, p) for p in directory.iterdir() if (m := _NAMED.match(p.name)) and p.is_file()]
    found.sort(key=lambda mp: (mp[0].group(1), int(mp[0].group(2) or 0)))
    return [p for _, p in found]


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest backups beyond ``keep``; the ones deleted."""
    if keep < 1:
        raise BadInput("keep at least 1 backup")
    backups = kept(directory)
    doomed = backups[: max(0, len(backups) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _target(directory: Path, db: Database, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP)
    suffix = "db" if db.is_sqlite else "dump"
    target = directory / f"telecoder-{stamp}.{suffix}"
    n = 1
    while target.exists():  # two in the same second
        target = directory / f"telecoder-{stamp}-{n}.{suffix}"
        n += 1
    return target


async def backup_into(
    db: Database, directory: Path, *, keep: int, now: float | None = None
) -> tuple[Snapshot, list[Path]]:
    """A new timestamped backup in ``directory``; then the oldest beyond ``keep`` deleted."""
    if keep < 1:
        raise BadInput("keep at least 1 backup")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    snapshot = await backup(db, _target(directory, db, time.time() if now is None else now))
    return snapshot, prune(directory, keep)


def backup_dir(settings: Settings) -> Path:
    return settings.backup_dir or settings.home / "backups"


class BackupSchedule:
    """Backs the store up at each slot of ``TELECODER_BACKUP_SCHEDULE`` (one server per slot)."""

    def __init__(self, store: Store, settings: Settings, *, since: float | None = None) -> None:
        if not settings.backup_schedule:
            raise BadInput("TELECODER_BACKUP_SCHEDULE is not set")
        self.store = store
        self.settings = settings
        try:
            self.schedule = Schedule(settings.backup_schedule)
        except BadInput as e:
            raise BadInput(f"TELECODER_BACKUP_SCHEDULE: {e.message}") from None
        self.since = time.time() if since is None else since  # slots before start: not due

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a failed backup is logged, not fatal."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("backup: the scheduled backup failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.jobs_poll_seconds)

    async def tick(self, now: float | None = None) -> Snapshot | None:
        """Back up if a slot is due and this server claims it; the backup made, if any."""
        now = time.time() if now is None else now
        last = await self.store.jobs.last_slot(SLOT_NAME)
        slot = self.schedule.due(max(last or 0.0, self.since), now)
        if slot is None or not await self.store.jobs.skip_slot(SLOT_NAME, slot):
            return None
        directory = backup_dir(self.settings)
        snapshot, removed = await backup_into(
            self.store.db, directory, keep=self.settings.backup_keep, now=now
        )
        log.info(
            "backup: %s (%d sessions, %d bytes); removed %d old",
            snapshot.path,
            snapshot.sessions,
            snapshot.size,
            len(removed),
        )
        return snapshot
