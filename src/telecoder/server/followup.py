"""A follow-up from the dashboard: what to do next after a session ended, as a new session in
its chain (``parent_id``, ``chain_id``, ``depth``) on its repository with its engine, model and
mode, starting from the branch it pushed (else from where it started) — as a chain's
``on_success`` follow-up starts (``store.chains``), but with a person's prompt."""

from __future__ import annotations

import dataclasses

from telecoder.domain import Session
from telecoder.errors import BadInput, Conflict
from telecoder.intake import Request
from telecoder.server.state import ServerState


async def create(
    state: ServerState, parent: Session, prompt: str, *, sender: str, user: str | None
) -> Session:
    """The queued follow-up of ``parent``, ``user``'s. ``Conflict`` while ``parent`` has not ended;
    ``BadInput`` for an empty prompt, a chain past its depth limit, or what intake refuses."""
    if not parent.status.terminal:
        raise Conflict(f"session {parent.id} is {parent.status.value}: follow up once it ended")
    if not prompt.strip():
        raise BadInput("the follow-up is empty: say what to do next")
    depth = parent.depth + 1
    limit = state.settings.chain_max_depth
    if depth > limit:
        raise BadInput(
            f"a follow-up would be depth {depth}, past the chain's limit of {limit} "
            "(TELECODER_CHAIN_MAX_DEPTH)"
        )
    result = parent.result
    pushed = result is not None and result.commit and result.branch
    base = result.branch if pushed and result is not None else parent.base_ref
    accepted = await state.intake(
        Request(
            repo=parent.repo,
            prompt=prompt.strip(),
            engine=parent.engine,
            model=parent.model,
            base=base,
            mode=parent.mode.value,
            origin={"channel": "dashboard", "principal": sender},
            user=user,
        )
    )
    chained = dataclasses.replace(
        accepted.session, parent_id=parent.id, chain_id=parent.chain_id or parent.id, depth=depth
    )
    child = await state.store.sessions.create(chained)
    state.bus.poke()
    return child
