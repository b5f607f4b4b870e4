"""Turn a request (from the CLI, the API, a channel) into a session, or refuse it clearly.

Everything that can be checked before queueing is checked here, so bad input never reaches the
queue: an empty prompt, an unknown engine or forge, a repository that is missing or not git, a
base ref the remote does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecoder import engine_choice, notifications
from telecoder.channels import configured
from telecoder.domain import Mode, NewSession
from telecoder.endings import choose_forge
from telecoder.errors import BadInput, EngineNotFound
from telecoder.forges.remote import shorthand_url
from telecoder.gateway.routing import choose_tier, parse_tier
from telecoder.masking import url_credentials, without_credentials
from telecoder.protocols import Forge
from telecoder.settings import Settings
from telecoder.steps import MAX_STEPS
from telecoder.workspace import Workspace

# A session is stored, shown and may run later on another host: a credential in its URL would be
# kept in the database and travel with it. git has better places for one.
CREDENTIALS_IN_URL = (
    "the repository URL carries a credential; it is not accepted, so that it is never stored "
    "or shown. Use {url} and give the credential to git instead: GITHUB_TOKEN (or "
    "TELECODER_GITHUB_TOKEN) for GitHub, a git credential helper or an ssh key for other hosts"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    repo: str
    prompt: str
    engine: str | None = None
    model: str | None = None
    base: str | None = None
    mode: str = Mode.TASK.value
    priority: int = 0
    forge: str | None = None
    timeout_seconds: float | None = None
    origin: dict[str, Any] | None = None
    tier: str | None = None  # trivial, standard, complex; None: chosen from the task
    budget_usd: float | None = None
    notify: tuple[str, ...] = ()  # "slack:@me", "telegram:456": told when it ends or asks
    notify_me: dict[str, str] | None = None  # a channel's sender: whom @me means there
    steps: tuple[str, ...] = ()  # a multi-step task (``steps``); the prompt defaults to them
    user: str | None = None  # who submits it (the API's or dashboard's principal; a job's owner)


@dataclass(frozen=True, slots=True)
class Accepted:
    session: NewSession
    warnings: list[str] = field(default_factory=list)


async def accept(
    request: Request,
    *,
    settings: Settings,
    workspace: Workspace,
    engines: Collection[str],
    forges: Mapping[str, Forge],
    notify_channels: Collection[str] | None = None,
    fleet: engine_choice.Fleet | None = None,
) -> Accepted:
    """``notify_channels``: the channels a session may notify on (default: those the settings
    configure). ``fleet``: given, an engine that cannot run here (CLI missing, no key) is
    refused unless a live worker advertises it (or, for a key, the gateway has endpoints)."""
    steps = _steps(request)
    prompt = request.prompt.strip() or "\n".join(steps)
    if not prompt:
        raise BadInput("the prompt is empty")
    notify = _notify(request, settings, notify_channels)
    if request.engine:
        _known(request.engine, engines)
    try:
        mode = Mode(request.mode)
    except ValueError:
        raise BadInput(f"unknown mode {request.mode!r} (known: task, chat)") from None
    if request.timeout_seconds is not None and request.timeout_seconds <= 0:
        raise BadInput("the timeout must be positive")
    tier = _tier(request)
    if request.budget_usd is not None and not 0 <= request.budget_usd <= 1_000_000:
        raise BadInput(f"a budget of ${request.budget_usd} is not sensible")
    base = _branch_name(request.base.strip()) if request.base else None
    _refuse_options(request.repo.strip(), base)
    if url_credentials(request.repo):
        raise BadInput(CREDENTIALS_IN_URL.format(url=without_credentials(request.repo)))
    source = await workspace.resolve(_github_shorthand(request.repo.strip(), settings))
    forge = choose_forge(forges, request.forge or settings.forge, source.remote_url)
    # Both ask git (the remote, the checkout): at once, not one after the other.
    _, dirty, unpushed = await asyncio.gather(
        workspace.check_base(source, base, env=forge.git_env(source.remote_url)),
        workspace.dirty(source),
        workspace.unpushed(source),
    )
    # Without an engine named: the repository's (read again when it runs), else the default.
    repo_engine = None if request.engine else await engine_choice.repo_engine(source)
    engine, chosen_by = engine_choice.choose(
        request.engine, repo_engine, settings=settings, engines=engines
    )
    _known(engine, engines)
    if fleet is not None:
        await engine_choice.check_runnable(engine, settings, fleet)
    warnings = []
    if dirty:
        warnings.append(
            f"{source.spec} has uncommitted changes: the task starts from the remote's "
            f"{base or 'default branch'} and will not see them"
        )
    if unpushed:
        commits = "commit" if unpushed == 1 else "commits"
        warnings.append(
            f"{source.spec} has {unpushed} local {commits} not pushed to origin: the task "
            f"starts from the remote's {base or 'default branch'} and will not see them"
        )
    session = NewSession(
        repo=source.spec,
        prompt=prompt,
        engine=engine,
        engine_source=chosen_by,
        model=request.model or None,
        base_ref=base,
        mode=mode,
        priority=request.priority,
        forge=request.forge,
        max_attempts=settings.max_attempts,
        timeout_seconds=request.timeout_seconds,
        origin=request.origin,
        tier=tier,
        budget_usd=request.budget_usd,
        notify=notify,
        steps=steps,
        user=request.user,
    )
    return Accepted(session, warnings)


def _known(engine: str, engines: Collection[str]) -> None:
    if engine not in engines:
        raise EngineNotFound(f"unknown engine {engine!r} (known: {', '.join(sorted(engines))})")


def _steps(request: Request) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in request.steps)
    if not steps:
        return ()
    if any(not s for s in steps):
        raise BadInput("a step is empty")
    if len(steps) > MAX_STEPS:
        raise BadInput(f"a task has at most {MAX_STEPS} steps")
    if request.mode != Mode.TASK.value:
        raise BadInput("steps are for a task, not a chat")
    return steps


def _notify(request: Request, settings: Settings, known: Collection[str] | None) -> tuple[str, ...]:
    if not request.notify:
        return ()
    if known is None:  # the configured channels that can write to someone (Slack, Telegram)
        known = configured.notifying(settings)
    me = request.notify_me or notifications.me_of(settings.notify_me)
    return notifications.targets(request.notify, known=known, me=me)


def _github_shorthand(repo: str, settings: Settings) -> str:
    """``owner/name`` (that is no local path) means the repository on GitHub."""
    if Path(repo).expanduser().exists():
        return repo
    return shorthand_url(repo, settings.github_api_url) or repo


def _tier(request: Request) -> str | None:
    """The tier the caller gave, else one chosen from the task; none for a pinned model."""
    given = parse_tier(request.tier)
    if given is not None:
        return given.value
    if request.model:
        return None  # --model pins one model: no tier routing
    return choose_tier(request.prompt, request.origin).value


def _branch_name(base: str) -> str:
    """A branch given by its full name (``refs/heads/main``) as the branch's own name, which
    the worker looks up, pushes against and targets pull requests at. ``refs/tags/…`` stays
    whole: it names the tag even where a branch has the same short name."""
    name = base.removeprefix("refs/heads/")
    if not name:
        raise BadInput(f"the base ref {base!r} names no branch")
    return name


def _refuse_options(repo: str, base: str | None) -> None:
    """Refuse what git would read as an option (``--upload-pack=…``), wherever it would land."""
    if repo.startswith("-"):
        raise BadInput(
            f"the repository {_short(repo)} starts with '-', which git would read as an option "
            "(a path that starts with '-' can be written ./-…)"
        )
    if base and base.startswith("-"):
        raise BadInput(f"the base ref {_short(base)} starts with '-': no branch or tag does")


def _short(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")
