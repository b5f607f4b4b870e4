"""Follow-up prompts of a chain (``.telecoder.yml`` ``on_success`` / ``on_failure``): the
placeholders a prompt may use and their safe rendering.

A prompt is plain text in which ``{{ session.id }}``-style placeholders are replaced by the
finished session's values. Rendering is one pass of a regular expression over a fixed list of
names: no expressions, no attribute access, no filters, and a value is never rendered again (a
result text holding ``{{ session.id }}`` stays as it is). A name outside the list is refused when
the file is read (``unknown``), so a typo is the repository's bad input, not an empty string.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from telecoder.domain import Session

# The names a follow-up prompt may use; each is rendered as plain text ("" when unset).
PLACEHOLDERS = (
    "session.id",
    "session.repo",
    "session.branch",
    "session.status",
    "session.prompt",
    "session.error",
    "session.depth",
    "session.chain_id",
    "result.text",
    "result.branch",
    "result.commit",
    "result.pr_url",
)
_PATTERN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_ANY = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)  # what looks like a placeholder at all
MAX_VALUE = 4000  # a long result text is clipped in a prompt


def unknown(prompt: str) -> list[str]:
    """What ``prompt`` writes as a placeholder (``{{ … }}``) that is not in ``PLACEHOLDERS``
    (an expression, a filter, a typo)."""
    found = (m.group(1).strip() for m in _ANY.finditer(prompt))
    return [name for name in found if name not in PLACEHOLDERS]


def values_of(session: Session) -> dict[str, str]:
    result = session.result
    raw: dict[str, Any] = {
        "session.id": session.id,
        "session.repo": session.repo,
        "session.branch": session.branch,
        "session.status": session.status.value,
        "session.prompt": session.prompt,
        "session.error": session.error,
        "session.depth": session.depth,
        "session.chain_id": session.chain_id or session.id,
        "result.text": result.text if result else None,
        "result.branch": result.branch if result else None,
        "result.commit": result.commit if result else None,
        "result.pr_url": result.pr_url if result else None,
    }
    return {k: "" if v is None else str(v)[:MAX_VALUE] for k, v in raw.items()}


def render(prompt: str, values: Mapping[str, str]) -> str:
    """``prompt`` with its placeholders replaced, in one pass (values are not re-rendered)."""
    return _PATTERN.sub(lambda m: values.get(m.group(1), m.group(0)), prompt)


def prompt_hash(repo: str, prompt: str) -> str:
    """What makes two follow-ups of a chain the same: the repository and the rendered prompt
    (whitespace at the ends ignored)."""
    return hashlib.sha256(f"{repo}\n{prompt.strip()}".encode()).hexdigest()
