"""``/api/jobs``: cron jobs, as ``telecoder jobs``; ``/api/templates`` (read-only); and the
dashboard's ``/jobs`` page (last and next run, status).

A job defined over the API is its definer's (``user``; its runs are theirs too): a member sees
and acts on their own jobs only — someone else's is 404, as if it did not exist."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, Field

from telecoder import jobs as defs
from telecoder import scheduler, templates
from telecoder.errors import BadInput, Conflict, JobNotFound
from telecoder.server import roles
from telecoder.server.auth import Principal
from telecoder.server.deps import PrincipalDep, StateDep, ViewerDep, limit_writes, refuse
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ErrorOut, _In
from telecoder.server.state import ServerState

router = APIRouter(tags=["jobs"])
pages = APIRouter(include_in_schema=False)

JobName = Annotated[str, Path(max_length=64, description="The job's name.")]
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No job (or template) of that name."},
    422: {"model": ErrorOut, "description": "Invalid input; ``detail`` says what."},
}
_WRITE_ERRORS: dict[int | str, dict[str, object]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "A job of that name exists."},
    429: {"model": ErrorOut, "description": "Too many writes; see Retry-After."},
}
_write = [Depends(limit_writes)]


class JobCreate(_In):
    """A job's definition, as its YAML file holds it, with its name."""

    name: str = Field(pattern=defs.NAME.pattern, description="The job's name.")
    schedule: str = Field(max_length=200, description="Cron, @hourly, @daily, … or @every 30s.")
    timezone: str = Field(default="UTC", max_length=64, description="IANA timezone.")
    repos: list[str] = Field(min_length=1, max_length=1000, description="One session each.")
    prompt: str | None = Field(default=None, description="The task (or template).")
    template: str | None = Field(default=None, description="A template's name.")
    vars: dict[str, str] = Field(default_factory=dict, description="The template's variables.")
    engine: str | None = None
    model: str | None = None


class LastRun(BaseModel):
    id: str
    status: str
    created_at: float


class JobOut(BaseModel):
    name: str
    status: str = Field(description="active, paused or invalid (a definition with an error).")
    schedule: str | None = None
    timezone: str | None = None
    repos: list[str] = Field(default_factory=list)
    prompt: str | None = None
    template: str | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    engine: str | None = None
    model: str | None = None
    path: str | None = None
    paused_reason: str | None = Field(default=None, description="Why it is paused.")
    failures: int = Field(default=0, description="Consecutive failed runs.")
    user: str | None = Field(default=None, description="Who defined it; its runs are theirs.")
    last_run: LastRun | None = None
    next_run: float | None = Field(default=None, description="The next slot (epoch seconds).")
    error: str | None = None


class JobRunOut(BaseModel):
    id: str = Field(description="The run's id.")
    job: str
    status: str


class TemplateOut(BaseModel):
    name: str
    description: str
    prompt: str
    vars: dict[str, dict[str, Any]]
    engine: str | None
    builtin: bool
    path: str


async def _visible(state: ServerState, principal: Principal) -> list[dict[str, Any]]:
    """Every job described; a member's own only."""
    found = await scheduler.describe_all(state.store, state.settings)
    if principal.role != "member":
        return found
    return [j for j in found if roles.owns(principal, _owner(j))]


def _owner(described: dict[str, Any]) -> str | None:
    user = described.get("user")
    return user if isinstance(user, str) else None


async def _job(request: Request, state: ServerState, principal: Principal, name: str) -> defs.Job:
    """The job ``name``; JobNotFound for a member when it is not theirs."""
    if principal.role == "member" and defs.NAME.match(name):  # before reading the file
        found = await state.store.jobs.get(name)
        if not roles.owns(principal, found.user if found is not None else None):
            refuse(request, JobNotFound(f"no job {name!r}"))
    return defs.load(state.settings.jobs_dir, name)


@router.get("/api/jobs", responses=_ERRORS, summary="Cron jobs with last and next run")
async def list_jobs(state: StateDep, principal: PrincipalDep) -> list[JobOut]:
    """A member's own jobs; everyone's for the other roles."""
    return [JobOut(**j) for j in await _visible(state, principal)]


@router.post(
    "/api/jobs",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Define a cron job",
)
async def add_job(body: JobCreate, state: StateDep, principal: PrincipalDep) -> JobOut:
    settings = state.settings
    spec = defs.parse(body.name, body.model_dump(exclude={"name"}, exclude_none=True))
    if (settings.jobs_dir / f"{body.name}.yaml").exists():
        raise Conflict(f"job {body.name!r} exists: delete it first")
    await scheduler.check(settings, state.intake, spec)
    defs.save(settings.jobs_dir, body.name, spec)
    await state.store.jobs.resume(body.name)
    await state.store.jobs.own(body.name, principal.user)
    job = defs.load(settings.jobs_dir, body.name)
    return JobOut(**await scheduler.describe(state.store, job))


@router.get("/api/jobs/{name}", responses=_ERRORS, summary="One cron job")
async def get_job(
    request: Request, name: JobName, state: StateDep, principal: PrincipalDep
) -> JobOut:
    job = await _job(request, state, principal, name)
    return JobOut(**await scheduler.describe(state.store, job))


@router.delete(
    "/api/jobs/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Delete a cron job (its runs stay)",
)
async def delete_job(
    request: Request, name: JobName, state: StateDep, principal: PrincipalDep
) -> Response:
    await _job(request, state, principal, name)
    defs.remove(state.settings.jobs_dir, name)
    await state.store.jobs.forget(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/api/jobs/{name}/run",
    status_code=status.HTTP_201_CREATED,
    dependencies=_write,
    responses=_WRITE_ERRORS,
    summary="Fire a job now, outside its schedule",
)
async def run_job(
    request: Request, name: JobName, state: StateDep, principal: PrincipalDep
) -> JobRunOut:
    job = await _job(request, state, principal, name)
    run = await scheduler.fire(state.store, state.settings, state.intake, job)
    state.bus.poke()
    return JobRunOut(id=run.id, job=name, status=run.status.value)


@router.post(
    "/api/jobs/{name}/pause", dependencies=_write, responses=_WRITE_ERRORS, summary="Pause a job"
)
async def pause_job(
    request: Request, name: JobName, state: StateDep, principal: PrincipalDep
) -> JobOut:
    job = await _job(request, state, principal, name)
    await state.store.jobs.pause(name, "paused by hand")
    return JobOut(**await scheduler.describe(state.store, job))


@router.post(
    "/api/jobs/{name}/resume", dependencies=_write, responses=_WRITE_ERRORS, summary="Resume a job"
)
async def resume_job(
    request: Request, name: JobName, state: StateDep, principal: PrincipalDep
) -> JobOut:
    job = await _job(request, state, principal, name)
    await state.store.jobs.resume(name)
    return JobOut(**await scheduler.describe(state.store, job))


@router.get("/api/templates", responses=_ERRORS, summary="Prompt templates")
async def list_templates(state: StateDep, _: PrincipalDep) -> list[TemplateOut]:
    found = templates.all_templates(state.settings.templates_dir)
    return [TemplateOut(**t.to_dict()) for t in found if not isinstance(t, BadInput)]


@router.get("/api/templates/{name}", responses=_ERRORS, summary="One prompt template")
async def get_template(
    name: Annotated[str, Path(max_length=64)], state: StateDep, _: PrincipalDep
) -> TemplateOut:
    return TemplateOut(**templates.load(state.settings.templates_dir, name).to_dict())


# --- the dashboard's page ---


@pages.get("/jobs")
async def jobs_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    found = await _visible(state, viewer)
    for j in found:
        last = j.get("last_run")
        j["last_at"] = _utc(last["created_at"]) if isinstance(last, dict) else ""
        j["next_at"] = _utc(j.get("next_run"))
    return render(request, state, viewer, "jobs.html", {"jobs": found})


def _utc(ts: object) -> str:
    if not isinstance(ts, int | float):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
