"""``POST /api/hooks/{name}``: a generic inbound webhook becomes a session, once per key.

The hook's signature is its authentication (no API token): a bad or missing one is a 401 and
queues nothing. The payload's templates are rendered next (422 when they cannot be), the request
is checked like any other task, and the session is stored under ``(hook:<name>, key)`` in the
same transaction, so a redelivery answers 200 with the first session instead of queueing again.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from telecoder.channels import hooks
from telecoder.errors import BadInput
from telecoder.intake import Request as IntakeRequest
from telecoder.server.deps import StateDep
from telecoder.server.schemas import ErrorOut

router = APIRouter(prefix="/api/hooks", tags=["hooks"])


class HookAccepted(BaseModel):
    session_id: str = Field(description="The session the delivery started (or started before).")
    status: str = Field(description="The session's status now.")
    duplicate: bool = Field(description="True: the idempotency key was seen; nothing new queued.")
    warnings: list[str] = Field(default_factory=list)


@router.post(
    "/{name}",
    status_code=202,
    response_model=HookAccepted,
    responses={
        200: {"model": HookAccepted, "description": "Seen before: the first delivery's session."},
        401: {"model": ErrorOut, "description": "Missing or wrong signature: nothing queued."},
        404: {"model": ErrorOut, "description": "No hook has that name."},
        422: {"model": ErrorOut, "description": "The payload does not fit the hook's templates."},
    },
    summary="Deliver a webhook to a hook",
)
async def deliver(
    name: Annotated[str, Path(max_length=64)], request: Request, state: StateDep
) -> Any:
    hook = hooks.load(state.settings.hooks_dir, name)
    body = await request.body()
    webhook_id = hook.verify(request.headers, body)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"the body is not JSON: {e}") from None
    rendered = hooks.render(
        hook,
        payload,
        body=body,
        webhook_id=webhook_id,
        templates_dir=state.settings.templates_dir,
    )
    source = f"hook:{name}"
    found = await state.store.deliveries.find(source, rendered.key)
    warnings: list[str] = []
    if found is None:
        origin: dict[str, Any] = {"channel": "hook", "hook": name, "key": rendered.key}
        if webhook_id:
            origin["webhook_id"] = webhook_id
        accepted = await state.intake(
            IntakeRequest(
                repo=rendered.repo,
                prompt=rendered.prompt,
                engine=rendered.engine,
                model=rendered.model,
                origin=origin,
            )
        )
        once = await state.store.deliveries.create_once(
            accepted.session, source=source, key=rendered.key
        )
        found, created, warnings = once.session, once.created, accepted.warnings
        if created:
            state.bus.poke()
    else:
        created = False
    out = HookAccepted(
        session_id=found.id, status=found.status.value, duplicate=not created, warnings=warnings
    )
    return JSONResponse(out.model_dump(), status_code=202 if created else 200)
