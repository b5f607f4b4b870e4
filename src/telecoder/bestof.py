"""Best of N: one task run N times (other engines, or the same one again), one winner.

``create`` makes a run of kind ``best_of`` whose sessions are the candidates, each on its own
branch. A candidate publishes its branch only (``publishing`` opens no pull request for a
session of a ``best_of`` run). When all have ended, ``Judging.judge`` compares them, once per run:

1. the checks: a candidate that did not succeed with a commit (its ``verify`` checks failed, it
   failed otherwise, or it changed nothing) loses;
2. among those that passed, the judge model's choice (``judge.choose``), else the smallest diff.

Then ONE pull request is opened for the winner through its forge, its body naming the reasons
and the other candidates' branches. The decision is the run's ``spec["verdict"]``; a user may
``pick`` another passing candidate, which opens the pull request for that one.

Exactly once: the verdict is claimed with a write guarded on the run's spec as read
(``store.runs.update_spec``), so of several workers and servers one judges. Whoever ends the
last candidate (a worker) judges at once; every worker's upkeep also looks for ended runs with
no verdict (a claim older than ``STALE_SECONDS`` is taken over: its judge died).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from telecoder.diffs import git_diff_source
from telecoder.domain import (
    EventKind,
    NewEvent,
    NewRun,
    Run,
    RunKind,
    RunStatus,
    Session,
    SessionStatus,
)
from telecoder.endings import choose_forge, commit_message
from telecoder.errors import BadInput, Conflict, TeleCoderError
from telecoder.intake import Accepted, Request
from telecoder.judge import Candidate, choose
from telecoder.protocols import Forge, Publication, Published
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.workspace import Workspace

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
STALE_SECONDS = 900.0  # a judging claim older than this is taken over
DECIDED = '"state":"decided"'  # in a run's spec once its verdict is in

Intake = Callable[[Request], Awaitable[Accepted]]


def split(spec: str | None) -> tuple[str | None, str | None]:
    """``codex`` → (codex, None); ``opencode:gpt-4.1-mini`` → (opencode, gpt-4.1-mini);
    ``acp:gemini:x`` → (acp, gemini:x): a candidate's engine and, after a colon, its model."""
    if spec is None:
        return None, None
    engine, _, model = spec.partition(":")
    return engine, model or None


def engines_for(attempts: int | None, engines: Sequence[str]) -> list[str | None]:
    """The candidates' engines (``ENGINE`` or ``ENGINE:MODEL``): ``engines`` in turn for
    ``attempts`` candidates (default: one each); no engines: the request's ``attempts`` times."""
    names = [e.strip() for e in engines if e.strip()]
    n = attempts if attempts is not None else len(names)
    if n < 2 or n > MAX_ATTEMPTS:
        raise BadInput(f"best of N takes 2 to {MAX_ATTEMPTS} attempts (got {n})")
    if not names:
        return [None] * n
    return [names[i % len(names)] for i in range(n)]


async def create(
    store: Store,
    intake: Intake,
    request: Request,
    *,
    attempts: int | None,
    engines: Sequence[str] = (),
) -> tuple[Run, list[Session], list[str]]:
    """The run and its candidates (``task_key`` ``candidate-1``…), and intake's warnings."""
    if request.mode != "task":
        raise BadInput("best of N runs tasks, not chats")
    chosen = engines_for(attempts, engines)

    async def one(each: str | None) -> Accepted:
        engine, model = split(each)
        asked = dataclasses.replace(
            request, engine=engine or request.engine, model=model or request.model
        )
        return await intake(asked)

    # Checked at once (each may ask git about the remote); the first refusal is raised.
    found = await asyncio.gather(*(one(each) for each in chosen))
    candidates = [
        dataclasses.replace(a.session, task_key=f"candidate-{i}") for i, a in enumerate(found, 1)
    ]
    warnings: list[str] = []
    for accepted in found:
        warnings += [w for w in accepted.warnings if w not in warnings]
    spec = {
        "attempts": len(chosen),
        "engines": [s.engine for s in candidates],
        "models": [s.model for s in candidates],
        "prompt": request.prompt,
        "repo": request.repo,
    }
    run = NewRun(kind=RunKind.BEST_OF, name=_name(request.prompt), spec=spec)
    made, sessions = await store.runs.create(run, candidates)
    return made, sessions, warnings


def _name(prompt: str) -> str:
    first = (prompt.strip().splitlines() or ["best of N"])[0]
    return "best of: " + (first if len(first) <= 60 else first[:59] + "…")


def standing(session: Session) -> str | None:
    """Why ``session`` lost on its checks; None when it passed (succeeded with a commit)."""
    if session.status != SessionStatus.SUCCEEDED:
        why = session.error or session.status.value
        return f"{session.status.value}: {why}"[:300]
    if session.result is None or not session.result.commit:
        return "changed nothing"
    return None


def verdict_of(run: Run) -> dict[str, Any] | None:
    verdict = run.spec.get("verdict")
    return verdict if isinstance(verdict, dict) else None


class Judging:
    """Judges best-of-N runs and opens the winner's pull request (see the module)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        workspace: Workspace,
        forges: Mapping[str, Forge],
        owner: str = "",
    ) -> None:
        self.settings = settings
        self.store = store
        self.workspace = workspace
        self.forges = forges
        self.owner = owner
        self.diff = git_diff_source(workspace)

    async def ended(self, session: Session | None) -> None:
        """After a session's attempt: judge its run if it was the last candidate to end."""
        if session is None or session.run_id is None or not session.status.terminal:
            return
        await self.judge(session.run_id)

    async def sweep(self) -> list[str]:
        """Judge the ended best-of-N runs that have no verdict yet; their ids."""
        done = []
        for run in await self.store.runs.ended_of_kind(RunKind.BEST_OF, unless=DECIDED):
            if await self.judge(run.id) is not None:
                done.append(run.id)
        return done

    async def judge(self, run_id: str) -> dict[str, Any] | None:
        """Claim the run's judging and do it; the verdict, or None when it is not due here
        (not a best-of-N run, a candidate still runs, or it is judged or being judged)."""
        now = time.time()

        def claim(run: Run) -> dict[str, Any] | None:
            if run.kind != RunKind.BEST_OF or run.status == RunStatus.RUNNING:
                return None
            verdict = verdict_of(run)
            if verdict is not None and (
                verdict.get("state") != "judging"
                or float(verdict.get("claimed_at") or 0) > now - STALE_SECONDS
            ):
                return None
            judging = {"state": "judging", "by": self.owner, "claimed_at": now}
            return {**run.spec, "verdict": judging}

        run = await self.store.runs.update_spec(run_id, claim)
        if run is None:
            return None
        try:
            verdict = await self._decide(run)
        except Exception as e:  # recorded, not retried: a person can still pick
            log.exception("run %s: judging failed", run_id)
            verdict = {"winner": None, "reasons": f"judging failed: {type(e).__name__}: {e}"}
        return await self._record(run_id, verdict, by="judge")

    async def pick(self, run_id: str, session_id: str) -> dict[str, Any]:
        """A person's choice instead of the judge's: the pull request for ``session_id``."""
        run = await self.store.runs.get(run_id)
        if run.kind != RunKind.BEST_OF:
            raise BadInput(f"run {run_id} is a {run.kind.value} run, not best of N")
        before = verdict_of(run)
        if run.status == RunStatus.RUNNING or (before or {}).get("state") == "judging":
            raise Conflict(f"run {run_id} is still being decided: pick once it is")
        sessions = {s.id: s for s in await self.store.runs.sessions(run_id)}
        chosen = sessions.get(session_id)
        if chosen is None:
            raise BadInput(f"session {session_id} is not a candidate of run {run_id}")
        if (lost := standing(chosen)) is not None:
            raise BadInput(f"session {session_id} cannot win: {lost}")
        published = await self._open(run, chosen, list(sessions.values()), "picked by a person")
        verdict = {
            **(before or {}),
            "winner": chosen.id,
            "reasons": "picked by a person",
            "picked": True,
            **_pr(published),
        }
        if before and before.get("winner") and before.get("winner") != chosen.id:
            verdict["previous"] = {"winner": before.get("winner"), "pr_url": before.get("pr_url")}
        return await self._record(run_id, verdict, by="user", force=True)

    async def _decide(self, run: Run) -> dict[str, Any]:
        sessions = await self.store.runs.sessions(run.id)
        lost = {s.id: why for s in sessions if (why := standing(s)) is not None}
        passing = [s for s in sessions if s.id not in lost]
        base: dict[str, Any] = {"lost": lost, "passing": [s.id for s in passing]}
        if not passing:
            reasons = "no candidate passed its checks: " + "; ".join(
                f"{sid} ({why})" for sid, why in lost.items()
            )
            return {**base, "winner": None, "reasons": reasons}
        candidates = [await self._candidate(s) for s in passing]
        task = str(run.spec.get("prompt") or passing[0].prompt)
        chosen = await choose(self.settings, task, candidates)
        base["judge"] = self.settings.judge_model if len(candidates) > 1 else None
        winner = next(s for s in passing if s.id == chosen.winner)
        published = await self._open(run, winner, sessions, chosen.reasons)
        return {**base, "winner": winner.id, "reasons": chosen.reasons, **_pr(published)}

    async def _candidate(self, session: Session) -> Candidate:
        result = session.result
        size = (result.diff.insertions + result.diff.deletions) if result and result.diff else 0
        try:
            diff = await self.diff(session, await self.store.sessions.attempts(session.id))
            text, size = diff.text, diff.insertions + diff.deletions
        except TeleCoderError as e:
            text = f"(the diff cannot be read: {e.message})"
        return Candidate(
            session_id=session.id, engine=session.engine, branch=session.branch, diff=text,
            size=size,
        )  # fmt: skip

    async def _open(
        self, run: Run, winner: Session, sessions: Sequence[Session], reasons: str
    ) -> Published:
        """The winner's pull request, through its forge: the body names why it won and lists
        the other candidates' branches."""
        source = await self.workspace.resolve(winner.repo)
        forge = choose_forge(self.forges, winner.forge or self.settings.forge, source.remote_url)
        await forge.ready(source.remote_url)
        title, _, body = commit_message(winner).partition("\n")
        others = [
            f"- `{s.branch}` ({s.engine}, {s.id}): {standing(s) or 'passed its checks'}"
            for s in sessions
            if s.id != winner.id
        ]
        text = "\n\n".join(
            [
                body.strip() or winner.prompt,
                f"**Best of {len(sessions)}** (run {run.id}): this is {winner.engine}'s candidate "
                f"({winner.id}).",
                f"**Why it won:** {reasons}",
                "**The other candidates** (kept as branches):\n" + "\n".join(others),
            ]
        )
        base = winner.base_ref or await self._base(winner)
        return await forge.publish(
            Publication(
                session_id=winner.id,
                remote_url=source.remote_url,
                branch=winner.branch,
                base=base,
                title=title,
                body=text,
            )
        )

    async def _base(self, session: Session) -> str:
        """The branch the candidate started from (its ``workspace_ready`` step)."""
        for event in await self.store.events.list(session.id, limit=200):
            if event.kind == EventKind.PROGRESS and event.data.get("step") == "workspace_ready":
                return str(event.data["base"])
        raise BadInput(f"session {session.id} never had a workspace: no base to open a PR on")

    async def _record(
        self, run_id: str, verdict: dict[str, Any], *, by: str, force: bool = False
    ) -> dict[str, Any]:
        now = time.time()
        final = {**verdict, "state": "decided", "by": by, "decided_at": now}

        def write(run: Run) -> dict[str, Any] | None:
            current = verdict_of(run) or {}
            if not force and current.get("state") != "judging":
                return None  # (taken over meanwhile: the other judge records)
            return {**run.spec, "verdict": final}

        status = RunStatus.SUCCEEDED if final.get("winner") else RunStatus.FAILED
        await self.store.runs.update_spec(run_id, write, status=status)
        if (winner := final.get("winner")) is not None:
            data = {"step": "chosen", "run_id": run_id, "by": by, "reasons": final["reasons"]}
            if final.get("pr_url"):
                data["pr_url"] = final["pr_url"]
            await self.store.events.append(winner, [NewEvent(kind=EventKind.PROGRESS, data=data)])
        log.info("run %s: %s", run_id, final.get("reasons"))
        return final


def _pr(published: Published) -> dict[str, Any]:
    return {"pr_url": published.url, "pr_number": published.number}
