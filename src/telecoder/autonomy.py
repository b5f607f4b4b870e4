"""After TeleCoder opened a pull request: its risk tier as a label, and — only where the
repository's ``.telecoder.yml`` (as its base branch has it) says ``auto_merge: low`` — a merge
of a low-risk pull request whose checks passed.

The tier is ``telecoder.risk``'s (a pure function of the paths, the size and the checks). A
forge that can label and merge (``Reviewing``: GitHub) gets the ``risk:<tier>`` label, the
other tiers' labels taken off (a later revision may change the tier). The merge goes through
the forge's API, pinned to the pushed commit; a draft (a partial result) never merges itself.

The pull request is open by then: what fails here (the forge refusing a label or a merge) is
kept in the risk entry, never a failure of the session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from telecoder.errors import ForgeError
from telecoder.risk import Risk, Tier, checks_passed

log = logging.getLogger(__name__)


@runtime_checkable
class Reviewing(Protocol):
    """A forge that labels and merges pull requests."""

    async def label(
        self, remote_url: str, number: int, *, add: Sequence[str], remove: Sequence[str] = ()
    ) -> None: ...

    async def merge(self, remote_url: str, number: int, *, sha: str | None = None) -> str | None:
        """None when merged, else why not."""
        ...


def why_not_merge(
    risk: Risk, auto_merge: str, checks: Iterable[Mapping[str, Any]], *, draft: bool
) -> str | None:
    """Why the pull request must not merge itself; None when it may."""
    if auto_merge != "low":
        return "auto_merge is off"
    if draft:
        return "a draft (a partial result)"
    if risk.tier != Tier.LOW:
        return f"its risk is {risk.tier.value}"
    if not checks_passed(checks):
        return "no check passed"
    return None


async def review(
    forge: object,
    remote_url: str,
    number: int,
    risk: Risk,
    *,
    auto_merge: str,
    checks: Sequence[Mapping[str, Any]],
    sha: str,
    draft: bool,
) -> dict[str, Any]:
    """Label pull request ``number`` with its tier and merge it where allowed: the outcome's
    ``risk`` entry."""
    entry = risk.to_dict()
    if not isinstance(forge, Reviewing):
        return entry  # a forge without labels (local): the tier is in the outcome only
    others = [t.label for t in Tier if t != risk.tier]
    try:
        await forge.label(remote_url, number, add=[risk.tier.label], remove=others)
    except ForgeError as e:
        log.warning("cannot label pull request #%s: %s", number, e.message)
        entry["label_error"] = e.message
    if auto_merge == "off":
        return entry
    reason = why_not_merge(risk, auto_merge, checks, draft=draft)
    if reason is None:
        try:
            reason = await forge.merge(remote_url, number, sha=sha)
        except ForgeError as e:
            reason = e.message
    entry["merged"] = reason is None
    if reason is not None:
        entry["not_merged"] = reason
    return entry
