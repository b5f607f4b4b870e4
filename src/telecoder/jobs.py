"""Cron jobs: ``$TELECODER_HOME/jobs/<name>.yaml`` — a task fired on a schedule::

    schedule: "30 2 * * *"      # cron (5 fields), @hourly, @daily, @weekly, @monthly, @yearly,
                                # or @every 30s / 5m / 1h30m
    timezone: Europe/Berlin     # IANA; default UTC
    repos: [./app, ./lib]       # one run per firing, a session per repository
    prompt: "Bump the copyright year"   # or template: + vars:
    engine: claude-code         # optional

Slots are computed with cronsim (Debian cron's DST rules: a daily job fires once on the
fall-back day, and once on the spring-forward day). ``@every`` slots are multiples of the
interval since the epoch, so every scheduler computes the same slots.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telecoder import amounts
from telecoder.errors import BadInput, Conflict, JobNotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MIN_INTERVAL = 0.1  # seconds: @every faster than this is a hot loop, not a schedule
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a job fires: a cron expression in a timezone, or every ``interval`` seconds."""

    text: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        self.interval  # noqa: B018 (validates)
        if self.interval is None:
            try:
                CronSim(self.cron, datetime.now(self.zone))
            except CronSimError as e:
                raise BadInput(f"schedule {self.text!r}: {e}") from None

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadInput(f"unknown timezone {self.timezone!r} (an IANA name)") from None

    @property
    def interval(self) -> float | None:
        if not self.text.startswith("@every"):
            return None
        every = self.text.removeprefix("@every").strip()
        if not every:
            raise BadInput(f"schedule {self.text!r}: @every needs a duration, like @every 30s")
        seconds = amounts.duration(every)
        if seconds < MIN_INTERVAL:
            raise BadInput(f"schedule {self.text!r}: at least {MIN_INTERVAL}s between firings")
        return seconds

    @property
    def cron(self) -> str:
        return MACROS.get(self.text.strip().lower(), self.text.strip())

    def latest(self, now: float) -> float:
        """The latest slot at or before ``now`` (epoch seconds)."""
        if (every := self.interval) is not None:
            return math.floor(now / every) * every
        start = datetime.fromtimestamp(now, self.zone) + timedelta(seconds=1)
        return next(CronSim(self.cron, start, reverse=True)).timestamp()

    def after(self, moment: float) -> float:
        """The first slot after ``moment``."""
        if (every := self.interval) is not None:
            return (math.floor(moment / every) + 1) * every
        return next(CronSim(self.cron, datetime.fromtimestamp(moment, self.zone))).timestamp()

    def due(self, since: float, now: float) -> float | None:
        """The slot to fire at ``now``, if one came after ``since`` (the last one fired, or when
        the job was added): only the latest — missed slots coalesce into one firing."""
        slot = self.latest(now)
        return slot if slot > since else None


class JobSpec(BaseModel):
    """One job's definition, as its YAML file holds it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Optional: the file's name is the name.")
    schedule: str = Field(description="Cron, @hourly/@daily/…, or @every 30s.")
    timezone: str = Field(default="UTC", description="IANA timezone of the cron expression.")
    repos: list[str] = Field(min_length=1, description="One session per repository per firing.")
    prompt: str | None = None
    template: str | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    engine: str | None = None
    model: str | None = None

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if bool(self.prompt) == bool(self.template):
            raise ValueError("give exactly one of prompt and template")
        if self.vars and not self.template:
            raise ValueError("vars need a template")
        try:
            Schedule(self.schedule, self.timezone)
        except BadInput as e:
            raise ValueError(e.message) from None
        return self


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    spec: JobSpec
    path: Path

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.spec.schedule, self.spec.timezone)

    def to_dict(self) -> dict[str, Any]:
        data = self.spec.model_dump(exclude_none=True, exclude={"name"})
        return {"name": self.name, "path": str(self.path), **data}


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadInput(
            f"invalid job name {name!r}: lower-case letters, digits, - and _, at most 64"
        )
    return name


def parse(name: str, data: Any) -> JobSpec:
    try:
        return JobSpec.model_validate(data if data is not None else {})
    except ValidationError as e:
        problems = "; ".join(_problem(err["loc"], err["msg"]) for err in e.errors())
        raise BadInput(f"job {name!r}: {problems}") from None


def _problem(loc: tuple[Any, ...], msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    where = ".".join(str(p) for p in loc)
    return f"{where}: {msg}" if where else msg


def load(directory: Path, name: str) -> Job:
    if not NAME.match(name):
        raise JobNotFound(f"no job {name!r}")
    path = directory / f"{name}.yaml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise JobNotFound(f"no job {name!r}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BadInput(f"job {name!r}: not valid YAML: {e}") from None
    return Job(name, parse(name, data), path)


def all_jobs(directory: Path) -> list[Job | BadInput]:
    """Every job in ``directory`` (a definition that cannot be used, as its error)."""
    found: list[Job | BadInput] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.yaml")):
        try:
            found.append(load(directory, path.stem))
        except (BadInput, JobNotFound) as e:
            found.append(BadInput(f"{path.name}: {e.message}"))
    return found


def save(directory: Path, name: str, spec: JobSpec) -> Path:
    check_name(name)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}.yaml"
    data = spec.model_dump(exclude_none=True, exclude_defaults=True, exclude={"name"})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(f"job {name!r} exists: remove it first") from None
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    return path


def remove(directory: Path, name: str) -> Path:
    job = load(directory, name)
    job.path.unlink()
    return job.path
