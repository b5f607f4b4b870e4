"""The review stage: the diff reviewed after the checks pass and before anything is pushed
(``.telecoder.yml`` ``review: council | ENGINE[:MODEL]``, ARCHITECTURE §3).

Each reviewer (``telecoder.reviewers``) runs as an agent of its own through the same runtime and
gateway as the session's agent, in the session's worktree mounted READ-ONLY (``Confiner``'s
``review`` role; a home of its own, not the agent's), told ``recommendations.INSTRUCTIONS``, the
task and the diff (both fenced as untrusted data). The reviewers run side by side; their answers
are parsed and tallied (``recommendations``). A reviewer that fails is reported (a
``reviewer_failed`` step) and the tally is made from the others; when none answers, the session
fails ``review_blocked``: nothing unreviewed is published.

Consensus and majority findings at ``review_severity`` or above block: the SAME agent session is
resumed with them (like a failed check's revision), the checks run again, then the review — at
most ``max_revisions`` such rounds. Still blocked after that (or with an engine that cannot be
resumed), the session ends like checks that keep failing: ``failed`` with ``review_blocked`` and
the findings as its error, nothing pushed (a session someone watches waits ``blocked`` with them
as its question). The findings that did not block go into the pull request's body under
"Review" and into the result's ``review``.

Whatever the runtime, the worktree is snapshotted before the reviewers run and compared after:
a reviewer that changed it (possible only without a sandbox) has its changes put back and the
review is refused.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from telecoder import questions, recommendations, repoconfig, reviewers
from telecoder.agentrun import AgentRunner
from telecoder.confine import Confiner
from telecoder.domain import EventKind, FailureKind, Lease
from telecoder.endings import check
from telecoder.errors import BadInput, TeleCoderError
from telecoder.gitcmd import ISOLATED, git_out
from telecoder.protocols import Engine, EngineTask, Usage
from telecoder.recommendations import Group, Severity, Tally
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.reviewers import Reviewer
from telecoder.revisions import AgentWork, Work, add_usage
from telecoder.workspace import Workspace, Worktree

MAX_DIFF_CHARS = 60_000  # of the diff, in a reviewer's prompt
MAX_TASK_CHARS = 8_000


@dataclass(frozen=True, slots=True)
class Reviewed:
    """The agent's work after the review; ``review``: for the result, ``section``: for the
    pull request's body (None: no review ran)."""

    work: Work
    review: dict[str, Any] | None = None
    section: str | None = None


class ReviewerFailed(TeleCoderError):
    """A reviewer gave no usable answer."""


class ReviewStage:
    def __init__(
        self,
        *,
        homes: Path,
        workspace: Workspace,
        runner: AgentRunner,
        agent_work: AgentWork,
        engines: Callable[[str], Engine],
        council: Callable[[str], list[Reviewer]],
    ) -> None:
        self.homes = homes  # reviewers' engine homes go below it (the settings' engine_homes)
        self.workspace = workspace
        self.runner = runner
        self.agent_work = agent_work
        self.engines = engines
        self.council = council  # the session's engine -> a council's reviewers

    def panel(self, config: repoconfig.RepoConfig, engine: str) -> list[Reviewer] | None:
        """The reviewers ``.telecoder.yml`` asks for (None: no review); an engine nobody knows
        is the repository's bad input, found before the agent runs."""
        if config.review is None:
            return None
        if config.review == reviewers.COUNCIL:
            panel = self.council(engine)
        else:
            panel = reviewers.panel([config.review])
        for reviewer in panel:
            try:
                known = self.engines(reviewer.engine)
            except BadInput as e:
                raise BadInput(f"{repoconfig.FILENAME} review: {e.message}") from None
            if not getattr(known, "instructed", True):  # shell: its prompt is a command
                raise BadInput(
                    f"{repoconfig.FILENAME} review: the {reviewer.engine} engine cannot review "
                    "(it runs a command, no model reads the diff)"
                )
        return panel

    async def work(
        self,
        panel: list[Reviewer] | None,
        work: Work,
        engine: Engine,
        task: EngineTask,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> Reviewed:
        """Review the agent's passing work; while findings block, resume its session with
        them (up to ``max_revisions`` rounds)."""
        if panel is None or work.failure is not None:
            return Reviewed(work)
        level = Severity.named(config.review_severity)
        prompt = _task_text(task.prompt)
        rounds = 0
        while True:
            diff = await self.pending_diff(wt)
            if not diff.strip():
                return Reviewed(work)  # an answer, no change: nothing to review
            tally, usage = await self.review(
                panel, prompt, diff, rounds, wt, task, lease, recorder, control, confiner
            )
            work = replace(work, usage=add_usage(work.usage, usage))
            blocking = tally.blocking(level)
            summary = _summary(tally, blocking, level, rounds)
            if not tally.answered:
                return Reviewed(_refused(work, recorder, "review failed: no reviewer answered"))
            if not blocking:
                return Reviewed(work, summary, section(tally))
            resumable = work.session_id is not None
            if rounds >= config.max_revisions or not resumable:
                error = blocked_summary(blocking, rounds, resumable=resumable)
                failed = replace(_refused(work, recorder, error), resumable=resumable)
                return Reviewed(failed, summary)
            rounds += 1
            count = f"{len(blocking)} finding{'s' if len(blocking) != 1 else ''}"
            recorder.progress(
                "review_revision",
                round=rounds,
                findings=len(blocking),
                message=f"revision asked for {count}",
            )
            asked = replace(task, prompt=revision_prompt(blocking), resume_id=work.session_id)
            revised = await self.agent_work.work(
                engine, asked, config, wt, lease, recorder, control, confiner
            )
            usage_so_far = add_usage(work.usage, revised.usage)
            work = replace(revised, usage=usage_so_far, checkpoint=work.checkpoint)
            if work.failure is not None:
                return Reviewed(work, summary)

    async def review(
        self,
        panel: Sequence[Reviewer],
        task_text: str,
        diff: str,
        round_: int,
        wt: Worktree,
        task: EngineTask,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None,
    ) -> tuple[Tally, Usage | None]:
        """One review of ``diff`` by every reviewer of ``panel``, side by side; the tally and
        what the reviewers cost (None with the gateway on: it metered them)."""
        what = f"council of {len(panel)}" if len(panel) > 1 else panel[0].name
        recorder.progress(
            "reviewing",
            round=round_,
            reviewers=[r.name for r in panel],
            message=f"reviewing ({what})…",
        )
        await self.workspace.sanitize(wt)
        before = await self.workspace.snapshot(wt)
        prompt = reviewer_prompt(task_text, diff)
        root = self.homes / f"{lease.session_id}.review"
        try:
            answers = await asyncio.gather(
                *(
                    self._one(r, n, prompt, wt, task, root, recorder, control, confiner)
                    for n, r in enumerate(panel, 1)
                ),
                return_exceptions=True,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, root, True)
        check(control)
        await self.workspace.sanitize(wt)
        if changed := await self.workspace.changed_since(wt, before):
            await self.workspace.restore(wt, before)
            listed = ", ".join(changed[:10])
            raise BadInput(f"review refused: a reviewer changed the worktree ({listed})")
        found: dict[str, list[recommendations.Recommendation]] = {}
        usage: Usage | None = None
        for reviewer, answer in zip(panel, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                error = answer.message if isinstance(answer, TeleCoderError) else str(answer)
                recorder.progress("reviewer_failed", reviewer=reviewer.name, error=error)
                continue
            found[reviewer.name], used = answer
            usage = add_usage(usage or Usage(), used) if used is not None else usage
        tally = recommendations.tally(found, panel=[r.name for r in panel])
        recorder.progress(
            "reviewed",
            round=round_,
            answered=tally.answered,
            **{label.value: len(tally.labelled(label)) for label in recommendations.Label},
            message=summary_text(tally.to_dict()),
        )
        return tally, usage

    async def _one(
        self,
        reviewer: Reviewer,
        number: int,
        prompt: str,
        wt: Worktree,
        task: EngineTask,
        root: Path,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None,
    ) -> tuple[list[recommendations.Recommendation], Usage | None]:
        engine = self.engines(reviewer.engine)
        home = root / str(number)
        home.mkdir(parents=True, exist_ok=True)
        run = EngineTask(
            prompt=prompt,
            workdir=wt.path,
            home=home,
            model=reviewer.model,
            env=task.env,
            tier=task.tier,  # the task's size: a builtin reviewer's turns
        )
        confinement = confiner.for_role("review", home=home) if confiner else None
        tagged = _Tagged(recorder, reviewer.name)
        result = await self.runner.run(engine, run, tagged, control, None, confinement)
        if not result.ok:
            raise ReviewerFailed(result.error or f"{reviewer.engine} failed")
        try:
            found = recommendations.parse(reviewer.name, result.text or "")
        except ValueError as e:
            raise ReviewerFailed(f"unreadable answer: {e}") from None
        return found, (result.usage if self.runner.gateway is None else None)

    async def pending_diff(self, wt: Worktree) -> str:
        """What would be committed now, as a diff against the base."""
        await self.workspace.sanitize(wt)
        tree = await self.workspace.snapshot(wt)
        return await git_out(
            wt.path, *wt.git(), "diff", "--no-ext-diff", "--no-textconv", wt.base_sha, tree,
            env=ISOLATED,
        )  # fmt: skip


class _Tagged(EventRecorder):
    """A reviewer's events in the session's log, each naming the reviewer."""

    def __init__(self, recorder: EventRecorder, reviewer: str) -> None:
        self.parent = recorder
        self.reviewer = reviewer
        self.masker = recorder.masker

    def add(self, kind: EventKind, data: Mapping[str, Any]) -> None:
        self.parent.add(kind, {**data, "reviewer": self.reviewer})


def _task_text(prompt: str) -> str:
    """The task as the reviewers see it (without the agent's instructions on asking)."""
    return prompt.replace("\n\n" + questions.HINT, "").strip()


def _refused(work: Work, recorder: EventRecorder, error: str) -> Work:
    kind = FailureKind.REVIEW_BLOCKED
    recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": error})
    return replace(work, failure=(kind, error))


def _fenced(text: str) -> str:
    return re.sub(r"(?i)</?\s*untrusted", lambda m: m.group(0).replace("<", "&lt;"), text)


def reviewer_prompt(task_text: str, diff: str) -> str:
    """What a reviewer is asked: the instructions, the task and the diff, fenced as data."""
    task_text = task_text[:MAX_TASK_CHARS]
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + "\n[… the diff is cut here]"
    return (
        f"{recommendations.INSTRUCTIONS}\n\n"
        "Review the change below, made in this repository (the working directory) for the "
        "task below. You may read the files for context.\n\n"
        f"The task:\n<untrusted>\n{_fenced(task_text)}\n</untrusted>\n\n"
        f"The change, as a diff against the base:\n<untrusted>\n{_fenced(diff)}\n</untrusted>\n"
    )


def _where(group: Group) -> str:
    first = group.first
    if first.file is None:
        return ""
    return f" ({first.file}:{first.line})" if first.line is not None else f" ({first.file})"


def revision_prompt(blocking: Sequence[Group]) -> str:
    """What the agent is told when reviewers block its change."""
    parts = [
        "Reviewers of your change (a code review before it is published) found problems that "
        "must be fixed. Fix each one below in the code; keep the rest of your change as it is.",
        "",
    ]
    for group in blocking:
        first = group.first
        parts.append(
            f"- [{group.severity}, {group.label.value} of {len(group.reviewers)}] "
            f"{first.title}{_where(group)}"
        )
        if first.rationale:
            parts.append(f"  {first.rationale[:1000]}")
    return "\n".join(parts).rstrip() + "\n"


def blocked_summary(blocking: Sequence[Group], rounds: int, *, resumable: bool) -> str:
    """The session's error when findings still block."""
    count = f"{len(blocking)} finding{'s' if len(blocking) != 1 else ''}"
    if not resumable:
        head = f"{count} block (the engine cannot be resumed to revise its work)"
    elif rounds:
        head = f"{count} still block after {rounds} revision{'s' if rounds != 1 else ''}"
    else:
        head = f"{count} block (max_revisions is 0)"
    lines = [f"review blocked: {head}; nothing was pushed"]
    lines += [f"- [{g.severity}, {g.label.value}] {g.first.title}{_where(g)}" for g in blocking]
    return "\n".join(lines)


def _summary(
    tally: Tally, blocking: Sequence[Group], level: Severity, rounds: int
) -> dict[str, Any]:
    """The review as the result keeps it: the tally, what blocked, after how many rounds."""
    return {
        "round": rounds,
        "blocking_at": str(level),
        "blocking": len(blocking),
        **tally.to_dict(),
    }


def section(tally: Tally) -> str:
    """The pull request body's "Review" section: the findings that did not block."""
    said = f"{len(tally.answered)} of {len(tally.panel)} reviewer"
    said += "s" if len(tally.panel) != 1 else ""
    lines = ["## Review", ""]
    if not tally.groups:
        return "\n".join([*lines, f"No findings ({said})."]) + "\n"
    lines += [f"Findings that did not block ({said}):", ""]
    for group in tally.groups:
        first = group.first
        lines.append(
            f"- **{first.title}**{_where(group)}: {group.severity}, {group.label.value} "
            f"({', '.join(group.reviewers)})"
        )
        if first.rationale:
            lines.append(f"  {first.rationale[:500]}")
    missing = [r for r in tally.panel if r not in tally.answered]
    if missing:
        lines += ["", f"Not answered: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def summary_text(review: Mapping[str, Any]) -> str:
    """One line for the tally: who answered and what was found."""
    counts = ", ".join(f"{len(review.get(k) or [])} {k}" for k in ("consensus", "majority"))
    counts += f", {len(review.get('minority') or [])} minority"
    return f"{len(review['answered'])} of {len(review['panel'])} answered: {counts}"
