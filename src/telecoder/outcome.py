"""A session's outcome: *Changed / Verified / Uncertain / Next*, one form for every reader.

What changed (the commit, its diff stats, the pull request), which checks passed (the ``verify``
events of the last revision), what the agent said it was unsure of (lines of its final message
that say so, and the session's error), and what a human should do next. Computed once, when an
attempt finishes (stored with the result), and read by the session's JSON, ``telecoder show``,
the dashboard and the GitHub status comment, so they all say the same.

Plain dicts in and out: this module sits below the domain, which shows the outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_UNCERTAIN = 10  # lines kept
LINE_CHARS = 300
ENDED = ("succeeded", "failed", "dead", "cancelled", "blocked", "skipped")

# Words with which an agent says it is not sure, or left something undone.
_UNSURE = re.compile(
    r"\b(unsure|not sure|uncertain|unclear|could not|couldn't|cannot|can't|unable|"
    r"did not|didn't|assum\w*|todo|fixme|might|may not|not verified|untested|"
    r"not tested|skipped|guess\w*)\b",
    re.IGNORECASE,
)


def summarize(
    *,
    status: str,
    result: Mapping[str, Any] | None,
    checks: Iterable[Mapping[str, Any]] = (),
    error: str | None = None,
) -> dict[str, Any]:
    """The outcome of a session in ``status`` with ``result`` (its JSON), the ``verify``
    events' data of its attempt, and its error."""
    result = result or {}
    changed = _changed(result, status)
    verified = _passed(checks)
    uncertain = unsure_lines(str(result.get("text") or ""))
    if error:
        uncertain.append(_line(f"Error: {error}"))
    if result.get("partial"):
        uncertain.append("the work was cut short: what the agent had done is pushed as a draft")
    risk = result.get("risk")  # the pull request's risk tier (telecoder.risk)
    return {
        "changed": changed,
        "verified": verified,
        "uncertain": uncertain,
        "next": _next(status, result, bool(verified)),
        "risk": dict(risk) if isinstance(risk, Mapping) else None,
    }


def complete(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """An outcome as stored (older ones have no ``risk``) with every key the API shows."""
    return {**outcome, "risk": outcome.get("risk")}


def unsure_lines(text: str) -> list[str]:
    """The lines of the agent's final message that say it was unsure or left something out."""
    found = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("-*• ").strip()
        if line and _UNSURE.search(line):
            found.append(_line(line))
        if len(found) >= MAX_UNCERTAIN:
            break
    return found


def markdown(outcome: Mapping[str, Any]) -> str:
    """The outcome as the four bold paragraphs of a GitHub comment."""
    verified = outcome.get("verified") or []
    if verified:
        checks = ", ".join(f"`{c['command']}` ✓" for c in verified)
    else:
        checks = "no checks ran (none configured in .telecoder.yml, or nothing got that far)"
    uncertain = outcome.get("uncertain") or []
    if uncertain:
        unsure = "\n" + "\n".join(f"- {line}" for line in uncertain)
    else:
        unsure = " nothing reported"
    return "\n\n".join(
        [
            f"**Changed:** {outcome.get('changed') or 'nothing'}",
            f"**Verified:** {checks}",
            f"**Uncertain:**{unsure}",
            f"**Next:** {outcome.get('next') or ''}",
            *([f"**Risk:** {_risk(outcome['risk'])}"] if outcome.get("risk") else []),
        ]
    )


def lines(outcome: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The outcome as (label, text) rows, for a terminal or a page."""
    verified = outcome.get("verified") or []
    checks = ", ".join(str(c["command"]) for c in verified) if verified else "no checks ran"
    uncertain = outcome.get("uncertain") or []
    return [
        ("Changed", str(outcome.get("changed") or "nothing")),
        ("Verified", checks),
        ("Uncertain", "; ".join(uncertain) if uncertain else "nothing reported"),
        ("Next", str(outcome.get("next") or "")),
        *([("Risk", _risk(outcome["risk"]))] if outcome.get("risk") else []),
    ]


def _risk(risk: Mapping[str, Any]) -> str:
    """``low — a small change …; merged itself``."""
    text = f"{risk.get('tier')} — {'; '.join(str(r) for r in risk.get('reasons') or [])}"
    if risk.get("merged"):
        text += "; merged itself (auto_merge: low)"
    return text


def _changed(result: Mapping[str, Any], status: str) -> str:
    if not result.get("commit"):
        if result.get("failed_ref"):  # TELECODER_PUSH_FAILED
            return f"nothing merged: the work that failed the checks is on {result['failed_ref']}"
        if status != "succeeded":  # a failed check's work is kept as a patch, not pushed
            return "nothing pushed"
        return "nothing: the agent answered without changing the repository"
    text = (
        f"{result.get('files_changed', 0)} file(s), +{result.get('insertions', 0)} "
        f"−{result.get('deletions', 0)}, commit {str(result['commit'])[:12]} on "
        f"`{result.get('branch')}`"
    )
    if result.get("pr_url"):
        text += f" — pull request {result['pr_url']}"
    return text


def _passed(checks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The checks that passed in the last revision that ran (one entry per check)."""
    reports: Sequence[Mapping[str, Any]] = list(checks)
    if not reports:
        return []
    last = max(int(r.get("revision") or 0) for r in reports)
    return [
        {"command": str(r.get("command")), "kind": str(r.get("kind") or "verify")}
        for r in reports
        if int(r.get("revision") or 0) == last and r.get("ok")
    ]


def _next(status: str, result: Mapping[str, Any], verified: bool) -> str:
    if status in ("succeeded", "blocked") and result.get("commit"):
        text = "review the change and merge it, or comment with what to change"
        return text if verified else f"{text} (no checks verified it: test it first)"
    if status in ("succeeded", "blocked"):
        return "nothing was changed: read the answer, or ask again more precisely"
    if result.get("partial"):
        return "the draft holds what was done: finish it, or ask again with more time or budget"
    return "see the session's log on the dashboard; fix the cause, then ask again"


def _line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"
