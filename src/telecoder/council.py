"""A council of reviewers: one target (a question, a diff, a branch or a pull request) put to
several reviewers at once, their recommendations tallied into consensus, majority and minority.

``create`` makes a run of kind ``council`` whose sessions are the reviewers (``task_key`` the
reviewer's name), each a read-only answer session (``NewSession.read_only``): its agent sees
the repository — at the branch or pull request's head when one is reviewed — and cannot change
it; its prompt is ``recommendations.INSTRUCTIONS`` and the target (a diff inlined and fenced as
data, or which commits to review). Each reviewer runs once: one that fails or times out is
reported, and the tally is made from the others.

``tally`` reads every reviewer's final answer (``recommendations.parse``) and groups them
(``recommendations.tally``; with ``merge``, a model may then join groups the words missed).
Its JSON is ``Tally.to_dict()`` plus each reviewer's status and why it is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from telecoder import engine_choice, recommendations, reviewers
from telecoder.domain import NewRun, Run, RunKind, RunStatus, Session, SessionStatus
from telecoder.errors import BadInput, TimedOut
from telecoder.intake import Accepted, Request
from telecoder.recommendations import Group, Tally
from telecoder.reviewers import Reviewer
from telecoder.settings import Settings
from telecoder.store import Store

MIN_REVIEWERS, MAX_REVIEWERS = 2, 7
MAX_DIFF_BYTES = 200_000  # a diff inlined in the prompt
MAX_QUESTION_CHARS = 20_000

Kind = Literal["question", "diff", "branch", "pr"]
Intake = Callable[[Request], Awaitable[Accepted]]
Merge = Callable[[list[Group]], Awaitable[list[tuple[int, int]]]]


# --- reviewers ---------------------------------------------------------------------------------


def parse_reviewers(given: Sequence[str], known: Collection[str]) -> list[Reviewer]:
    """The reviewers named (``ENGINE`` or ``ENGINE:MODEL`` each), checked: known engines, 2 to
    7 of them. ``BadInput`` names what is wrong."""
    names = [g.strip() for g in given if g.strip()]
    if not MIN_REVIEWERS <= len(names) <= MAX_REVIEWERS:
        raise BadInput(
            f"a council has {MIN_REVIEWERS} to {MAX_REVIEWERS} reviewers (got {len(names)})"
        )
    chosen = reviewers.panel(names)
    for reviewer, name in zip(chosen, names, strict=True):
        if reviewer.engine not in known:
            known_names = ", ".join(sorted(known))
            raise BadInput(
                f"reviewer {name!r}: unknown engine {reviewer.engine!r} (known: {known_names})"
            )
    return chosen


def reviewers_for(
    given: Sequence[str] | None,
    settings: Settings,
    *,
    known: Collection[str],
    available: Callable[[Settings], Sequence[str]] = reviewers.installed,
) -> list[Reviewer]:
    """The council's reviewers: those ``given`` (``--reviewers``), else ``reviewers.council``'s
    rule (``TELECODER_COUNCIL_REVIEWERS``, else three different installed engines, else the
    default engine three times), checked alike."""
    if given:
        return parse_reviewers(given, known)
    default = engine_choice.default_engine(settings, known) or "builtin"
    chosen = reviewers.council(settings, default, available=available)
    specs = [f"{r.engine}:{r.model}" if r.model else r.engine for r in chosen]
    return parse_reviewers(specs, known)


# --- the target --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What the council reviews."""

    kind: Kind
    text: str = ""  # the question, or the diff
    ref: str | None = None  # the branch (a pull request's head branch) the reviewers see
    base: str | None = None  # what the branch is compared with (a branch name)
    base_sha: str | None = None  # that branch's commit when the council started
    number: int | None = None  # the pull request's
    url: str | None = None  # the pull request's

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind}
        if self.kind == "question":
            spec["question"] = self.text
        elif self.kind == "diff":
            spec["diff_bytes"] = len(self.text.encode())
        if self.ref is not None:
            spec.update(ref=self.ref, base=self.base, base_sha=self.base_sha)
        if self.number is not None:
            spec.update(number=self.number, url=self.url)
        return spec

    def describe(self) -> str:
        """A line naming the target (the run's name, the report's heading)."""
        if self.kind == "question":
            first = (self.text.strip().splitlines() or [""])[0]
            return "question: " + (first if len(first) <= 60 else first[:59] + "…")
        if self.kind == "diff":
            return f"a diff of {len(self.text.encode())} bytes"
        if self.kind == "pr":
            return f"pull request #{self.number} ({self.ref} into {self.base})"
        return f"branch {self.ref} (against {self.base})"


def diff_target(text: str) -> Target:
    if not text.strip():
        raise BadInput("the diff is empty")
    if len(text.encode()) > MAX_DIFF_BYTES:
        raise BadInput(f"the diff is larger than {MAX_DIFF_BYTES // 1000} kB: review a branch")
    return Target(kind="diff", text=text)


def question_target(text: str) -> Target:
    if not text.strip():
        raise BadInput("the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise BadInput(f"the question is longer than {MAX_QUESTION_CHARS} characters")
    return Target(kind="question", text=text.strip())


_PR_URL = re.compile(r"^https?://[^/]+/([^/]+)/([^/]+)/pulls?/(\d+)/?$")
_PR_NUMBER = re.compile(r"^#?(\d+)$")


def pull_request_of(target: str) -> tuple[str | None, int] | None:
    """``(owner/name or None, number)`` when ``target`` names a pull request (its URL, ``#N``
    or ``N``); None otherwise."""
    text = target.strip()
    if found := _PR_URL.match(text):
        return f"{found.group(1)}/{found.group(2).removesuffix('.git')}", int(found.group(3))
    if found := _PR_NUMBER.match(text):
        return None, int(found.group(1))
    return None


def prompt_for(target: Target) -> str:
    """A reviewer's prompt: the instructions, then what to review."""
    if target.kind == "question":
        what = (
            "Answer this question about the repository (your working directory) with "
            "recommendations. The question, as asked:\n\n" + fenced(target.text, "text")
        )
    elif target.kind == "diff":
        what = (
            "Review this diff against the repository (your working directory, at the commit "
            "the diff applies to). The diff, as given:\n\n" + fenced(target.text, "diff")
        )
    else:
        named = (
            f"pull request #{target.number} (branch `{target.ref}`)"
            if target.kind == "pr"
            else f"the branch `{target.ref}`"
        )
        since = target.base_sha or f"origin/{target.base}"
        what = (
            f"Review {named}: your working directory is checked out at its head, read-only. "
            f"Review the changes it makes over `{target.base}` (commit {since}): see them with "
            f"`git log {since}..HEAD` and `git diff {since}...HEAD`."
        )
    return f"{recommendations.INSTRUCTIONS}\n\n{what}"


def fenced(text: str, info: str) -> str:
    """``text`` in a fence longer than any run of backticks in it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


# --- making the run ----------------------------------------------------------------------------


async def create(
    store: Store,
    intake: Intake,
    target: Target,
    panel: Sequence[Reviewer],
    *,
    repo: str,
    timeout_seconds: float | None = None,
) -> tuple[Run, list[Session], list[str]]:
    """The council's run and its reviewers' sessions (queued), and intake's warnings."""
    prompt = prompt_for(target)

    async def one(reviewer: Reviewer) -> Accepted:
        request = Request(
            repo=repo,
            prompt=prompt,
            engine=reviewer.engine,
            model=reviewer.model,
            base=target.ref,
            timeout_seconds=timeout_seconds,
        )
        return await intake(request)

    found = await asyncio.gather(*(one(reviewer) for reviewer in panel))
    sessions = [
        dataclasses.replace(a.session, task_key=r.name, read_only=True, max_attempts=1)
        for r, a in zip(panel, found, strict=True)
    ]
    warnings: list[str] = []
    for accepted in found:
        warnings += [w for w in accepted.warnings if w not in warnings]
    spec = {
        "target": target.to_spec(),
        "reviewers": [r.name for r in panel],
        "engines": [s.engine for s in sessions],
        "models": [s.model for s in sessions],
        "repo": sessions[0].repo,
    }
    run = NewRun(kind=RunKind.COUNCIL, name="council: " + target.describe(), spec=spec)
    made, created = await store.runs.create(run, sessions)
    return made, created, warnings


async def council_run(store: Store, run_id: str) -> tuple[Run, list[Session]]:
    """The run and its reviewers; ``BadInput`` when the run is not a council."""
    run = await store.runs.get(run_id)
    if run.kind != RunKind.COUNCIL:
        raise BadInput(f"run {run_id} is a {run.kind.value} run, not a council")
    return run, await store.runs.sessions(run_id)


async def wait(
    store: Store, run_id: str, *, seconds: float | None, poll: float = 0.5
) -> tuple[Run, list[Session]]:
    """Block until every reviewer ended; ``TimedOut`` after ``seconds``."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        run, sessions = await council_run(store, run_id)
        if run.status != RunStatus.RUNNING or all(s.status.terminal for s in sessions):
            return run, sessions
        if deadline is not None and time.monotonic() >= deadline:
            ended = sum(s.status.terminal for s in sessions)
            raise TimedOut(
                f"council {run_id}: {ended} of {len(sessions)} reviewers ended within {seconds:g} s"
            )
        left = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
        await asyncio.sleep(left)


# --- the tally ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Review:
    """One reviewer's part: its session, and its answer's recommendations or why there are
    none to count (``status``: answered, failed, unreadable or pending)."""

    reviewer: str
    session: Session
    status: Literal["answered", "failed", "unreadable", "pending"]
    why: str | None = None
    recommendations: tuple[recommendations.Recommendation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        s = self.session
        return {
            "reviewer": self.reviewer,
            "session_id": s.id,
            "engine": s.engine,
            "model": s.model,
            "session_status": s.status.value,
            "status": self.status,
            "why": self.why,
            "recommendations": len(self.recommendations),
        }


def review_of(session: Session) -> Review:
    reviewer = session.task_key or session.id
    if not session.status.terminal:
        return Review(reviewer=reviewer, session=session, status="pending", why="still running")
    if session.status != SessionStatus.SUCCEEDED:
        kind = f" ({session.failure_kind.value})" if session.failure_kind else ""
        why = f"{session.status.value}{kind}: {session.error or 'no answer'}"[:500]
        return Review(reviewer=reviewer, session=session, status="failed", why=why)
    text = session.result.text if session.result is not None else None
    try:
        found = recommendations.parse(reviewer, text or "")
    except ValueError as e:
        return Review(reviewer=reviewer, session=session, status="unreadable", why=str(e))
    return Review(
        reviewer=reviewer, session=session, status="answered", recommendations=tuple(found)
    )


async def tally(
    store: Store, run_id: str, *, merge: Merge | None = None
) -> tuple[Run, Tally, list[Review]]:
    """The council's tally as it stands (reviewers still running are missing from it)."""
    run, sessions = await council_run(store, run_id)
    reviews = [review_of(s) for s in sessions]
    answers = {r.reviewer: r.recommendations for r in reviews if r.status == "answered"}
    names = [r.reviewer for r in reviews]
    result = recommendations.tally(answers, panel=names)
    if merge is not None and len(result.groups) > 1:
        # The pairs name groups of this tally (sorted); the merge joins those of a new one.
        keys = [(g.first.reviewer, g.first.title) for g in result.groups]
        pairs = [
            (keys[a], keys[b])
            for a, b in await merge(result.groups)
            if 0 <= a < len(keys) and 0 <= b < len(keys)
        ]

        def joined(groups: list[Group]) -> list[tuple[int, int]]:
            where = {(g.first.reviewer, g.first.title): i for i, g in enumerate(groups)}
            return [(where[a], where[b]) for a, b in pairs if a in where and b in where]

        result = recommendations.tally(answers, panel=names, merge=joined)
    return run, result, reviews


def tally_json(run: Run, result: Tally, reviews: Sequence[Review]) -> dict[str, Any]:
    """``council tally --json`` (and ``GET /api/runs/{id}/tally``): ``Tally.to_dict()``, the
    run, each reviewer's status, and a note on what the tally was made from."""
    return {
        "run": run.to_dict(),
        "target": run.spec.get("target"),
        **result.to_dict(),
        "reviewers": [r.to_dict() for r in reviews],
        "complete": all(r.status != "pending" for r in reviews),
        "note": note(result, reviews),
    }


def note(result: Tally, reviews: Sequence[Review]) -> str:
    """``made from 2 of 3 reviewers: codex failed (…)`` — or from all of them."""
    answered, asked = len(result.answered), len(result.panel)
    if answered == asked:
        return f"made from all {asked} reviewers"
    missing = "; ".join(
        f"{r.reviewer} {r.status} ({r.why})" for r in reviews if r.status != "answered"
    )
    return f"made from {answered} of {asked} reviewers: {missing}"


def council_json(run: Run, sessions: Sequence[Session]) -> dict[str, Any]:
    """``council show --json``: the run and each reviewer's session and status."""
    return {
        "run": run.to_dict(),
        "target": run.spec.get("target"),
        "reviewers": [{**review_of(s).to_dict(), "session": s.to_dict()} for s in sessions],
    }
