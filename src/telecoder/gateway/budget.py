"""Budget policy the gateway and the pipeline share: what a session that reached its budget is
told, what its agent is told when it resumes, and whose a session is.

Plain functions, no I/O. The numbers live in the store (``store.budgets``: a session's budget,
the period budgets and their alerts); the pipeline and the worker act on them
(``telecoder.budgeting``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def message(spent: float, budget: float) -> str:
    """``budget reached: $2.00 of $2.00 — raise it or stop``."""
    return f"budget reached: ${spent:.2f} of ${budget:.2f} — raise it or stop"


def resume_prompt(budget: float) -> str:
    """What the agent is told when its session resumes after a raise."""
    return f"The budget was raised to ${budget:.2f}; continue the task where you stopped."


def user_of(origin: Mapping[str, Any] | None) -> str | None:
    """Whose a session is: the ``user`` a channel recorded, else the API token's name
    (``principal``; ``anonymous`` on an open server); None when nobody is named. The same
    as the gateway's tickets name in each usage row, so period budgets per user add them up."""
    if not origin:
        return None
    for key in ("user", "principal"):
        name = origin.get(key)
        if isinstance(name, str) and name:
            return name
    return None
