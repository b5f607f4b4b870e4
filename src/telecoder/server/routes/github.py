"""``POST /api/webhooks/github``: GitHub deliveries become sessions, once per delivery.

The signature (``X-Hub-Signature-256``, an HMAC-SHA256 of the body with
``TELECODER_GITHUB_WEBHOOK_SECRET``, compared in constant time) is the authentication: a bad or
missing one is a 401 and starts nothing. ``ping`` is answered; an event or action that is not a
trigger is a 202 that says why it was ignored. A trigger from a user without write permission
(and not in ``TELECODER_GITHUB_ALLOWED_USERS``) starts nothing; a pull request from a fork is
refused with a reply. Otherwise the session is queued under ``(github, X-GitHub-Delivery)`` in
the same transaction, so a redelivery answers 200 with the first session. The answer comes at
once: 👀 and the status comment are written in the background, the work happens in the queue.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from telecoder import github_checks, signing
from telecoder.channels import github as channel
from telecoder.channels import github_ci
from telecoder.errors import BadInput, ForgeError, HookNotFound
from telecoder.github_replies import GitHubReplies
from telecoder.intake import Request as IntakeRequest
from telecoder.server.deps import StateDep
from telecoder.server.schemas import ErrorOut
from telecoder.server.state import ServerState

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
SOURCE = "github"
NOT_CONFIGURED = "GitHub webhooks are not configured: set TELECODER_GITHUB_WEBHOOK_SECRET"
FORK_REFUSED = (
    "TeleCoder does not work on pull requests from forks: it would have to push to a "
    "repository it does not own, and run code it was not asked to trust. Open the pull request "
    "from a branch of this repository to have TeleCoder work on it."
)


class GitHubAnswer(BaseModel):
    action: str = Field(description="queued, duplicate, ignored, refused or pong.")
    reason: str | None = Field(default=None, description="Why nothing was queued.")
    session_id: str | None = Field(default=None, description="The session it started.")
    status: str | None = Field(default=None, description="The session's status now.")


def replies_of(request: Request) -> GitHubReplies:
    replies = getattr(request.app.state, "github", None)
    if replies is None:  # an app made before the secret was set
        replies = GitHubReplies(request.app.state.telecoder.settings)
        request.app.state.github = replies
    return replies


def _answer(answer: GitHubAnswer, status: int) -> JSONResponse:
    return JSONResponse(answer.model_dump(exclude_none=True), status_code=status)


@router.post(
    "/github",
    status_code=202,
    response_model=GitHubAnswer,
    responses={
        200: {"model": GitHubAnswer, "description": "ping, or a delivery seen before."},
        401: {"model": ErrorOut, "description": "Missing or wrong signature: nothing started."},
        404: {"model": ErrorOut, "description": "No webhook secret is configured."},
        422: {"model": ErrorOut, "description": "Not JSON, or no X-GitHub-Delivery."},
    },
    summary="Receive a GitHub webhook",
)
async def receive(request: Request, state: StateDep) -> Any:
    settings = state.settings
    if settings.github_webhook_secret is None:
        raise HookNotFound(NOT_CONFIGURED)
    body = await request.body()
    signing.verify_hmac(
        settings.github_webhook_secret.get_secret_value(),
        request.headers.get("x-hub-signature-256"),
        body,
        header="X-Hub-Signature-256",
    )
    event = request.headers.get("x-github-event", "")
    delivery = request.headers.get("x-github-delivery", "").strip()
    if not delivery or len(delivery) > 255:
        raise BadInput("X-GitHub-Delivery is missing (or longer than 255 characters)")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"the body is not JSON: {e}") from None
    if event == "ping":
        return _answer(GitHubAnswer(action="pong"), 200)
    found = await state.store.deliveries.find(SOURCE, delivery)
    if found is not None:
        return _duplicate(found.id, found.status.value)
    replies = replies_of(request)
    if event in github_ci.CI_EVENTS or event == "pull_request":
        return await _own_pull_request(state, replies, event, payload, delivery)
    label, handle = settings.github_label, settings.github_handle
    first = channel.parse(
        event, payload, label=label, handle=handle, own_login=settings.github_login
    )
    if isinstance(first, channel.Ignored) and not channel.may_be_configured(first):
        return _answer(GitHubAnswer(action="ignored", reason=first.reason), 202)
    full_name = str(payload["repository"]["full_name"])
    config = (await replies.repo_config(full_name)).github
    label, handle = config.label or label, config.handle or handle
    trigger = channel.parse(
        event, payload, label=label, handle=handle, own_login=settings.github_login
    )
    if isinstance(trigger, channel.Ignored):
        return _answer(GitHubAnswer(action="ignored", reason=trigger.reason), 202)
    allowed, permission = await replies.may_trigger(trigger.full_name, trigger.sender)
    if not allowed:
        reason = f"@{trigger.sender} has {permission} permission; triggering needs write"
        if settings.github_denied_reply:
            text = (
                f"@{trigger.sender}: only people with write access to this repository can ask "
                "TeleCoder for changes."
            )
            state.background.start(
                replies.say(trigger, text), "the reply to a user without permission"
            )
        return _answer(GitHubAnswer(action="ignored", reason=reason), 202)
    if trigger.is_pull:
        trigger = await _with_pull(replies, trigger)
        if trigger.fork:
            state.background.start(
                replies.say(trigger, FORK_REFUSED), "the reply to a fork pull request"
            )
            reason = "the pull request comes from a fork"
            return _answer(GitHubAnswer(action="refused", reason=reason), 202)
        files = await replies.pull_files(trigger.full_name, trigger.number)
        trigger = dataclasses.replace(trigger, files=files)
    app = replies.forge.app
    if app is not None and trigger.installation_id is not None:
        app.remember(trigger.full_name, trigger.installation_id)
    await replies.forge.ready(trigger.clone_url)  # git asks for the branch with it
    accepted = await state.intake(
        IntakeRequest(
            repo=trigger.clone_url,
            prompt=channel.prompt(trigger, handle),
            base=trigger.head_ref if trigger.is_pull else None,
            forge="github",
            origin=channel.origin(trigger, delivery),
        )
    )
    new = accepted.session
    if trigger.is_pull and trigger.head_ref:
        new = dataclasses.replace(new, branch=trigger.head_ref)  # one branch: the PR's own
    once = await state.store.deliveries.create_once(new, source=SOURCE, key=delivery)
    if not once.created:
        return _duplicate(once.session.id, once.session.status.value)
    state.bus.poke()
    session = once.session.to_dict()
    state.background.start(_welcome(replies, trigger, session), "👀 and the status comment")
    answer = GitHubAnswer(action="queued", session_id=once.session.id, status="queued")
    return _answer(answer, 202)


def _duplicate(session_id: str, status: str) -> JSONResponse:
    answer = GitHubAnswer(
        action="duplicate",
        session_id=session_id,
        status=status,
        reason="this delivery was received before",
    )
    return _answer(answer, 200)


async def _with_pull(replies: GitHubReplies, trigger: channel.Trigger) -> channel.Trigger:
    """The pull request's branch and where it comes from, when the payload did not say."""
    if trigger.head_ref is not None:
        return trigger
    pull = await replies.pull(trigger.full_name, trigger.number)
    head, base = pull.get("head") or {}, pull.get("base") or {}
    head_repo = (head.get("repo") or {}).get("full_name")
    base_repo = (base.get("repo") or {}).get("full_name") or trigger.full_name
    return dataclasses.replace(
        trigger,
        head_ref=str(head.get("ref") or "") or None,
        fork=head_repo is None or head_repo != base_repo,  # a deleted fork has none
    )


async def _welcome(replies: GitHubReplies, trigger: channel.Trigger, session: Any) -> None:
    try:
        await replies.acknowledge(trigger)
    finally:
        await replies.status(session)


# --- TeleCoder's own pull requests: failed checks, merges ----------------------------------------

CI_SOURCE = "github-ci"


async def _with_output(
    replies: GitHubReplies, item: github_ci.CheckFailed
) -> github_ci.CheckFailed:
    try:
        found = await github_checks.failure_output(replies.forge, item)
    except ForgeError as e:
        log.warning("GitHub: the failing checks' output could not be read: %s", e.message)
        return item
    return dataclasses.replace(item, output=found or item.output)


async def _own_pull_request(
    state: ServerState, replies: GitHubReplies, event: str, payload: Any, delivery: str
) -> JSONResponse:
    item = github_ci.parse(event, payload)
    if isinstance(item, channel.Ignored):
        return _answer(GitHubAnswer(action="ignored", reason=item.reason), 202)
    app = replies.forge.app
    if app is not None and item.installation_id is not None:
        app.remember(item.full_name, item.installation_id)
    config = (await replies.repo_config(item.full_name)).github
    await replies.forge.ready(item.clone_url)
    if isinstance(item, github_ci.Merged):
        return await _on_merge(state, item, config.on_merge, delivery)
    if item.event != "check_run" or not item.output:  # only a check run carries its output
        item = await _with_output(replies, item)
    attempts = config.ci_fix_attempts
    for attempt in range(1, attempts + 1):
        key = f"{item.full_name}#{item.number}:{attempt}"
        found = await state.store.deliveries.find(CI_SOURCE, key)
        if found is not None:
            if (found.origin or {}).get("head_sha") == item.head_sha:
                return _duplicate(found.id, found.status.value)  # that commit is being fixed
            continue
        accepted = await state.intake(
            IntakeRequest(
                repo=item.clone_url,
                prompt=github_ci.fix_prompt(item, attempt, attempts),
                base=item.head_ref,
                forge="github",
                origin=github_ci.origin(
                    item, event, delivery, ci_attempt=attempt, head_sha=item.head_sha
                ),
            )
        )
        new = dataclasses.replace(accepted.session, branch=item.head_ref)
        once = await state.store.deliveries.create_once(new, source=CI_SOURCE, key=key)
        if not once.created:
            return _duplicate(once.session.id, once.session.status.value)
        state.bus.poke()
        state.background.start(replies.status(once.session.to_dict()), "the status comment")
        answer = GitHubAnswer(action="queued", session_id=once.session.id, status="queued")
        return _answer(answer, 202)
    text = (
        f"The check {item.check!r} still fails after {attempts} fix attempts: TeleCoder gave "
        "up on it. Over to a human."
    )
    key = f"gave-up pr={item.number}"
    state.background.start(
        replies.say_once(item.full_name, item.number, key, text), "the gave-up reply"
    )
    reason = f"{attempts} fix attempts used on pull request #{item.number}: gave up"
    return _answer(GitHubAnswer(action="ignored", reason=reason), 202)


async def _on_merge(
    state: ServerState, merged: github_ci.Merged, prompts: list[str], delivery: str
) -> JSONResponse:
    if not prompts:
        reason = "merged; the repository's .telecoder.yml has no github.on_merge prompts"
        return _answer(GitHubAnswer(action="ignored", reason=reason), 202)
    first: GitHubAnswer | None = None
    for index, text in enumerate(prompts):
        accepted = await state.intake(
            IntakeRequest(
                repo=merged.clone_url,
                prompt=github_ci.merge_prompt(merged, text),
                base=merged.base_ref,
                forge="github",
                origin={
                    **github_ci.origin(merged, "pull_request", delivery, on_merge=index),
                    "pull_request": False,
                },
            )
        )
        once = await state.store.deliveries.create_once(
            accepted.session, source=SOURCE, key=f"{delivery}:merge:{index}"
        )
        if first is None:
            action = "queued" if once.created else "duplicate"
            first = GitHubAnswer(
                action=action, session_id=once.session.id, status=once.session.status.value
            )
    state.bus.poke()
    assert first is not None
    return _answer(first, 202 if first.action == "queued" else 200)
