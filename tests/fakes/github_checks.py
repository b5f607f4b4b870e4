"""The fake GitHub's CI: check runs of a commit, a workflow run's jobs and their logs, and the
``check_suite`` / ``workflow_run`` payloads that announce a failure (``self`` is the
``FakeGitHub``).

``GET /repos/{o}/{r}/commits/{sha}/check-runs`` → ``{"total_count", "check_runs": [...]}``;
``GET /repos/{o}/{r}/actions/runs/{id}/jobs`` → ``{"total_count", "jobs": [...]}``;
``GET /repos/{o}/{r}/actions/jobs/{id}/logs`` → 302 to ``/_logs/{id}``, plain text (as GitHub
redirects to a short-lived log URL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.fakes.github_webhooks import user_json as _user

CHECK_RUNS = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([^/]+)/check-runs$")
RUN_JOBS = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runs/(\d+)/jobs$")
JOB_LOGS = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/jobs/(\d+)/logs$")
LOGS = re.compile(r"^/_logs/(\d+)$")


@dataclass
class CheckRun:
    id: int
    sha: str
    name: str
    conclusion: str
    title: str
    summary: str
    text: str
    suite_id: int


@dataclass
class Job:
    id: int
    run_id: int
    name: str
    conclusion: str
    log: str


class FakeChecks:
    url: str
    _lock: Any

    def repository_json(self, owner: str, name: str) -> dict[str, Any]:  # by WebhookPayloads
        raise NotImplementedError

    def _checks_init(self) -> None:
        self.check_runs: dict[tuple[str, str], list[CheckRun]] = {}
        self.jobs: dict[tuple[str, str], list[Job]] = {}

    def add_check_run(
        self,
        owner: str,
        name: str,
        sha: str,
        check: str,
        *,
        conclusion: str = "failure",
        title: str = "",
        summary: str = "",
        text: str = "",
        suite_id: int = 500,
    ) -> CheckRun:
        with self._lock:
            runs = self.check_runs.setdefault((owner, name), [])
            run = CheckRun(9100 + len(runs), sha, check, conclusion, title, summary, text, suite_id)
            runs.append(run)
            return run

    def add_job(
        self, owner: str, name: str, run_id: int, job: str, *, conclusion: str, log: str
    ) -> Job:
        with self._lock:
            jobs = self.jobs.setdefault((owner, name), [])
            added = Job(7700 + len(jobs), run_id, job, conclusion, log)
            jobs.append(added)
            return added

    def ci_api(self, path: str) -> tuple[int, Any, dict[str, str]] | None:
        """The answer to a CI request (status, JSON body or text, headers), or None."""
        with self._lock:
            if match := CHECK_RUNS.match(path):
                owner, name, sha = match.groups()
                runs = [r for r in self.check_runs.get((owner, name), []) if r.sha == sha]
                body = {"total_count": len(runs), "check_runs": [self._run(r) for r in runs]}
                return 200, body, {}
            if match := RUN_JOBS.match(path):
                owner, name, run_id = match.groups()
                found = [j for j in self.jobs.get((owner, name), []) if j.run_id == int(run_id)]
                jobs = [
                    {
                        "id": j.id,
                        "run_id": j.run_id,
                        "name": j.name,
                        "status": "completed",
                        "conclusion": j.conclusion,
                    }
                    for j in found
                ]
                return 200, {"total_count": len(jobs), "jobs": jobs}, {}
            if match := JOB_LOGS.match(path):
                owner, name, job_id = match.groups()
                if not any(j.id == int(job_id) for j in self.jobs.get((owner, name), [])):
                    return 404, {"message": "Not Found"}, {}
                return 302, None, {"Location": f"{self.url}/_logs/{job_id}"}
        return None

    def job_log(self, path: str) -> str | None:
        """The plain-text log behind a redirect (no token needed, as on GitHub)."""
        match = LOGS.match(path)
        if match is None:
            return None
        with self._lock:
            for jobs in self.jobs.values():
                for job in jobs:
                    if job.id == int(match[1]):
                        return job.log
        return None

    def _run(self, run: CheckRun) -> dict[str, Any]:
        return {
            "id": run.id,
            "name": run.name,
            "head_sha": run.sha,
            "status": "completed",
            "conclusion": run.conclusion,
            "output": {"title": run.title, "summary": run.summary, "text": run.text},
            "check_suite": {"id": run.suite_id},
        }

    def suite_payload(
        self, owner: str, name: str, pull: Any, sha: str, *, suite_id: int = 500
    ) -> dict[str, Any]:
        """``check_suite`` ``completed`` with a failure on the pull request's head."""
        ref = {"ref": pull.head, "sha": sha, "repo": {"name": name}}
        return {
            "action": "completed",
            "check_suite": {
                "id": suite_id,
                "head_sha": sha,
                "status": "completed",
                "conclusion": "failure",
                "app": {"name": "GitHub Actions"},
                "pull_requests": [{"number": pull.number, "head": ref, "base": {"ref": pull.base}}],
            },
            "repository": self.repository_json(owner, name),
            "sender": _user("github-actions[bot]"),
        }

    def workflow_payload(
        self, owner: str, name: str, pull: Any, sha: str, *, run_id: int
    ) -> dict[str, Any]:
        """``workflow_run`` ``completed`` with a failure on the pull request's head."""
        ref = {"ref": pull.head, "sha": sha, "repo": {"name": name}}
        return {
            "action": "completed",
            "workflow_run": {
                "id": run_id,
                "name": "CI",
                "head_sha": sha,
                "status": "completed",
                "conclusion": "failure",
                "html_url": f"{self.url}/{owner}/{name}/actions/runs/{run_id}",
                "pull_requests": [{"number": pull.number, "head": ref, "base": {"ref": pull.base}}],
            },
            "repository": self.repository_json(owner, name),
            "sender": _user("github-actions[bot]"),
        }
