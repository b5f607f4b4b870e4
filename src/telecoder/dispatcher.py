"""What a message on a channel asks for: ignore it, run a session, answer it, or ask back.

``decide`` is deterministic first: a message that addresses TeleCoder and starts with a
registered repository's name and a colon (``app: fix the typo``) is a task for that repository,
whatever a model would say. A message that does not address TeleCoder is ignored. The rest is
the configured dispatcher's call: ``RuleDispatcher`` (no model: a task for the place's default
repository, else a question back naming the registered ones). Whatever a dispatcher answers is
checked here: a repository it names must be registered; anything unusable is ``ignore``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from telecoder.protocols import Inbound
from telecoder.settings import Settings
from telecoder.store import Repo

Action = Literal["ignore", "run", "answer", "ask"]
_PREFIX = re.compile(r"^\s*([a-z0-9][a-z0-9._-]{0,63})\s*:\s*(.+)$", re.DOTALL | re.IGNORECASE)


class Decision(BaseModel):
    """A dispatcher's answer. ``reply`` is the text to post for ``answer`` and ``ask``."""

    action: Action = "ignore"
    repo: str | None = Field(default=None, description="A registered repository's name.")
    prompt: str = ""
    engine: str | None = None
    reply: str | None = None
    reason: str | None = None


class Dispatcher(Protocol):
    async def decide(
        self, inbound: Inbound, repos: Sequence[Repo], default: Repo | None
    ) -> Decision: ...


class RuleDispatcher:
    """No model: the place's default repository, else ask which one."""

    async def decide(
        self, inbound: Inbound, repos: Sequence[Repo], default: Repo | None
    ) -> Decision:
        if default is not None:
            return Decision(action="run", repo=default.name, prompt=inbound.text)
        if not repos:
            return Decision(
                action="answer",
                reply="No repository is registered yet: an operator adds one with "
                "`telecoder repos add NAME URL`.",
                reason="no repository is registered",
            )
        names = ", ".join(f"`{repo.name}`" for repo in repos[:20])
        return Decision(
            action="ask",
            reply=f"Which repository? Start the message with its name and a colon, e.g. "
            f"`{repos[0].name}: …` (registered: {names}).",
            reason="no default repository for this place",
        )


def named_repo(text: str, repos: Sequence[Repo]) -> tuple[Repo, str] | None:
    """``app: fix the typo`` → (the repository ``app``, ``fix the typo``) when ``app`` is
    registered."""
    found = _PREFIX.match(text)
    if found is None:
        return None
    by_name = {repo.name: repo for repo in repos}
    repo = by_name.get(found.group(1).lower())
    return (repo, found.group(2).strip()) if repo is not None else None


async def decide(
    dispatcher: Dispatcher,
    inbound: Inbound,
    repos: Sequence[Repo],
    default: Repo | None,
    engines: Sequence[str],
) -> Decision:
    """The decision for ``inbound``, checked: rules first, then the dispatcher's call."""
    if not inbound.addressed:
        return Decision(action="ignore", reason="not addressed to TeleCoder")
    named = named_repo(inbound.text, repos)
    if named is not None:
        return Decision(action="run", repo=named[0].name, prompt=named[1], reason="named")
    if not inbound.text.strip():
        return Decision(action="ignore", reason="an empty message")
    decision = await dispatcher.decide(inbound, repos, default)
    return _checked(decision, inbound, repos, default, engines)


def _checked(
    decision: Decision,
    inbound: Inbound,
    repos: Sequence[Repo],
    default: Repo | None,
    engines: Sequence[str],
) -> Decision:
    if decision.action == "run":
        names = {repo.name for repo in repos}
        repo = decision.repo or (default.name if default else None)
        if repo not in names:
            reason = f"the dispatcher chose no registered repository ({repo!r})"
            return Decision(action="ignore", reason=reason)
        engine = decision.engine if decision.engine in engines else None
        prompt = decision.prompt.strip() or inbound.text
        return decision.model_copy(update={"repo": repo, "engine": engine, "prompt": prompt})
    if decision.action in ("answer", "ask") and not (decision.reply or "").strip():
        return Decision(action="ignore", reason=f"the dispatcher's {decision.action} had no text")
    return decision


def dispatcher_of(settings: Settings) -> Dispatcher:
    """The dispatcher the settings ask for: the rules, unless a model is configured."""
    return RuleDispatcher()
