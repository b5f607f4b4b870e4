"""Read-only sessions: answer sessions whose agent may read the repository and nothing more
(a council's reviewer). The confinement mounts the worktree and the agent's git dir read-only
(``Confiner(read_only=True)``); here, what the pipeline does differently for one: no setup
commands, checks, review stage or follow-ups from ``.telecoder.yml``, and the agent's final
message is the result — nothing is committed or pushed, whatever the worktree holds (a runtime
without a sandbox cannot stop a write, but nothing written leaves the host).
"""

from __future__ import annotations

from dataclasses import replace

from telecoder import outcome as outcomes
from telecoder.domain import EventKind, Result, ResultType, SessionStatus
from telecoder.endings import usage_fields
from telecoder.protocols import Usage
from telecoder.recorder import MAX_TEXT, EventRecorder
from telecoder.repoconfig import RepoConfig
from telecoder.store import Outcome


def narrowed(config: RepoConfig) -> RepoConfig:
    """The repository's settings as a read-only session uses them: no setup, no checks, no
    review stage, no follow-ups (each would run or write something for an answer that changes
    nothing)."""
    empty: dict[str, object] = {"setup": [], "verify": [], "checks": []}
    empty.update(on_success=[], on_failure=[], review=None)
    return config.model_copy(update=empty)


def tail(text: str | None) -> str | None:
    """An answer kept whole up to ``MAX_TEXT``; past it, its end (where a reviewer's JSON is),
    marked as cut."""
    if text is None or len(text) <= MAX_TEXT:
        return text
    return f"[{len(text) - MAX_TEXT} characters cut] …" + text[-MAX_TEXT:]


def answered(text: str | None, usage: Usage, recorder: EventRecorder) -> Outcome:
    """The attempt's end: succeeded with the agent's final message as a text answer."""
    answer = Result(type=ResultType.TEXT, text=tail(text))
    status = SessionStatus.SUCCEEDED
    found = outcomes.summarize(status=status, result=answer.to_dict(), checks=recorder.checks)
    answer = replace(answer, outcome=found)
    recorder.add(EventKind.RESULT, answer.to_dict())
    return Outcome(status=status, result=answer, **usage_fields(usage))
