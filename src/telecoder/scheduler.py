"""The scheduler: fires cron jobs' due slots, in every ``telecoder serve`` and ``worker``.

Every ``TELECODER_JOBS_POLL_SECONDS`` each scheduler reads ``$TELECODER_HOME/jobs``, and for each
job that is not paused:

1. counts the job's runs that ended into its consecutive failures (pausing it at
   ``TELECODER_JOBS_MAX_FAILURES``, logged and shown in ``jobs list``);
2. computes the latest slot at or before now; if it is later than the last slot fired (or than
   when the job was first seen or resumed) it fires it — only that one, so slots missed while
   no scheduler ran coalesce into one firing;
3. the firing's run is created with its ``(job, slot)`` row in one transaction, so however
   many schedulers run, one firing per slot wins (the others get SlotTaken and move on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from telecoder import fanout, jobs, templates
from telecoder.domain import NewRun, Run, RunKind
from telecoder.errors import BadInput, TeleCoderError
from telecoder.intake import Accepted, Request
from telecoder.settings import Settings
from telecoder.store import SlotTaken, Store

log = logging.getLogger(__name__)
Intake = Callable[[Request], Awaitable[Accepted]]


async def check(settings: Settings, intake: Intake, spec: jobs.JobSpec) -> None:
    """Refuse a definition now that would be refused when it fires: a template that does not
    render, a repository or engine the intake refuses (the error names the repository)."""
    prompt, engine = _prompt(settings, spec)
    request = Request(repo="", prompt=prompt, engine=engine, model=spec.model)
    await fanout.sessions_for(intake, request, spec.repos)


def _prompt(settings: Settings, spec: jobs.JobSpec) -> tuple[str, str | None]:
    if spec.template:
        prompt, named = templates.render(settings.templates_dir, spec.template, spec.vars)
        return prompt, spec.engine or named
    return spec.prompt or "", spec.engine


async def fire(
    store: Store,
    settings: Settings,
    intake: Intake,
    job: jobs.Job,
    *,
    slot: float | None = None,
) -> Run:
    """A run of ``job`` now: for ``slot`` (SlotTaken if it fired already), or outside the
    schedule (``telecoder jobs run``)."""
    spec = job.spec
    prompt, engine = _prompt(settings, spec)
    origin = {"channel": "job", "job": job.name, "slot": slot}
    state = await store.jobs.get(job.name)
    owner = state.user if state is not None else None  # its runs are its owner's
    request = Request(
        repo="", prompt=prompt, engine=engine, model=spec.model, origin=origin, user=owner
    )
    sessions, warnings = await fanout.sessions_for(intake, request, spec.repos)
    for warning in warnings:
        log.warning("job %s: %s", job.name, warning)
    run_spec = {"schedule": spec.schedule, "timezone": spec.timezone, "slot": slot}
    new = NewRun(kind=RunKind.JOB, name=job.name, spec=run_spec, job=job.name)
    run, _ = await store.runs.create(new, sessions, slot=None if slot is None else (job.name, slot))
    return run


class Scheduler:
    def __init__(self, store: Store, settings: Settings, intake: Intake) -> None:
        self.store = store
        self.settings = settings
        self.intake = intake
        self._reported: set[str] = set()  # broken definitions, logged once

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a failed tick is logged, not fatal."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler: the tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.jobs_poll_seconds)

    async def tick(self, now: float | None = None) -> list[Run]:
        """Fire every due slot; the runs this scheduler created."""
        fired: list[Run] = []
        for job in jobs.all_jobs(self.settings.jobs_dir):
            if isinstance(job, BadInput):
                if job.message not in self._reported:
                    self._reported.add(job.message)
                    log.warning("scheduler: job skipped: %s", job.message)
                continue
            run = await self._one(job, time.time() if now is None else now)
            if run is not None:
                fired.append(run)
        return fired

    async def _one(self, job: jobs.Job, now: float) -> Run | None:
        limit = self.settings.jobs_max_failures
        state, paused = await self.store.jobs.count(job.name, limit)
        if paused:
            log.warning("job %s: %s", job.name, state.paused_reason)
        if state.paused:
            return None
        last = await self.store.jobs.last_slot(job.name)
        slot = job.schedule.due(max(last or 0.0, state.since), now)
        if slot is None:
            return None
        try:
            run = await fire(self.store, self.settings, self.intake, job, slot=slot)
        except SlotTaken:
            return None
        except TeleCoderError as e:
            # Refused before a run existed (a repository gone, a template's variable): the slot
            # is spent and the firing counts as a failed run.
            if await self.store.jobs.skip_slot(job.name, slot):
                state = await self.store.jobs.fail(job.name, e.message, limit)
                log.warning("job %s: the firing failed: %s", job.name, e.message)
                if state.paused:
                    log.warning("job %s: %s", job.name, state.paused_reason)
            return None
        log.info("job %s: fired run %s for slot %s", job.name, run.id, slot)
        return run


async def describe(store: Store, job: jobs.Job, now: float | None = None) -> dict[str, object]:
    """The job as ``jobs list --json`` and ``GET /api/jobs`` show it: its definition, status
    (``active`` or ``paused``, with why), consecutive failures, last run and next slot."""
    now = time.time() if now is None else now
    state = await store.jobs.get(job.name)
    paused = state is not None and state.paused
    found = await store.runs.list(limit=1, job=job.name)
    last = found[0] if found else None
    return {
        **job.to_dict(),
        "status": "paused" if paused else "active",
        "paused_reason": state.paused_reason if state else None,
        "failures": state.failures if state else 0,
        "user": state.user if state else None,
        "last_run": None
        if last is None
        else {"id": last.id, "status": last.status.value, "created_at": last.created_at},
        "next_run": None if paused else job.schedule.after(now),
    }


async def describe_all(store: Store, settings: Settings) -> list[dict[str, object]]:
    """Every job described; a definition that cannot be used is listed as ``invalid``."""
    out: list[dict[str, object]] = []
    for job in jobs.all_jobs(settings.jobs_dir):
        if isinstance(job, BadInput):
            out.append(
                {"name": job.message.split(".yaml:")[0], "status": "invalid", "error": job.message}
            )
        else:
            out.append(await describe(store, job))
    return out
