"""What a failed CI run printed, asked of the GitHub API, for the fix session's prompt.

A ``check_run`` payload carries its own output; a ``check_suite`` or a ``workflow_run`` does not:
the failing check runs of the head commit are asked for (``GET
/repos/{o}/{r}/commits/{sha}/check-runs``, their ``output.title/summary/text``; for a suite, its
own runs only), and for a workflow run the logs of its failed jobs (``GET
…/actions/runs/{id}/jobs``, ``…/actions/jobs/{id}/logs``), each trimmed to its end, where the
failure usually is. All of it is untrusted: ``github_ci.fix_prompt`` fences it.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

from telecoder.channels import github_ci
from telecoder.errors import ForgeError
from telecoder.forges.github import GitHubApi, GitHubForge

log = logging.getLogger(__name__)

MAX_RUN = 3_000  # characters of one check run's output
MAX_LOG = 4_000  # of one job's log
MAX_JOBS = 3
# The timestamp GitHub puts before each line of a job's log.
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ", re.MULTILINE)


async def failure_output(forge: GitHubForge, failed: github_ci.CheckFailed) -> str:
    """The failing checks' output and failed jobs' logs, trimmed ("" when there is none)."""
    repo = _repo(failed.full_name)
    parts: list[str] = []
    async with forge.api(failed.full_name) as api:
        if failed.event == "workflow_run" and failed.run_id is not None:
            parts += await _job_logs(api, repo, failed.run_id)
        if failed.head_sha:
            parts += await _check_runs(api, repo, failed)
    return github_ci.tail("\n\n".join(parts), github_ci.MAX_OUTPUT)


async def _check_runs(api: GitHubApi, repo: str, failed: github_ci.CheckFailed) -> list[str]:
    path = f"{repo}/commits/{quote(failed.head_sha, safe='')}/check-runs"
    data = await api.call("GET", path, params={"per_page": "100", "filter": "latest"})
    runs = data.get("check_runs") if isinstance(data, dict) else None
    parts = []
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, dict) or run.get("conclusion") not in github_ci.FAILING:
            continue
        suite = (run.get("check_suite") or {}).get("id")
        if failed.event == "check_suite" and failed.run_id is not None and suite != failed.run_id:
            continue
        output = run.get("output") or {}
        text = "\n\n".join(
            str(output[key]) for key in ("title", "summary", "text") if output.get(key)
        )
        head = f"## check run {run.get('name')!s} ({run.get('conclusion')})"
        parts.append(f"{head}\n{github_ci.tail(text, MAX_RUN) or '(no output)'}")
    return parts


async def _job_logs(api: GitHubApi, repo: str, run_id: int) -> list[str]:
    data = await api.call("GET", f"{repo}/actions/runs/{run_id}/jobs", params={"per_page": "100"})
    jobs: list[Any] = data.get("jobs") or [] if isinstance(data, dict) else []
    failed = [j for j in jobs if isinstance(j, dict) and j.get("conclusion") in github_ci.FAILING]
    parts = []
    for job in failed[:MAX_JOBS]:
        try:
            text = await api.text(f"{repo}/actions/jobs/{int(job['id'])}/logs")
        except (ForgeError, KeyError, ValueError) as e:
            log.warning("GitHub: the log of job %s could not be read: %s", job.get("id"), e)
            continue
        text = _STAMP.sub("", text)
        parts.append(
            f"## job {job.get('name')!s} ({job.get('conclusion')})\n"
            + github_ci.tail(text, MAX_LOG)
        )
    return parts


def _repo(full_name: str) -> str:
    owner, _, name = full_name.partition("/")
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
