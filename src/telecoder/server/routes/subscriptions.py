"""``/api/subscriptions``: who is told when sessions finish, fail or need input."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from telecoder.server.deps import PrincipalDep, StateDep, StoreDep, ViewerDep, limit_writes
from telecoder.server.routes.dashboard import render
from telecoder.server.schemas import ErrorOut, Text
from telecoder.store.outbox import EVENT_NAMES

router = APIRouter(prefix="/api/subscriptions", tags=["subscriptions"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "No or a wrong API token."},
    404: {"model": ErrorOut, "description": "No subscription has that id."},
    422: {"model": ErrorOut, "description": "Invalid input; ``fields`` says which."},
}


class SubscriptionCreate(BaseModel):
    url: Text = Field(max_length=2048, description="Where notifications are POSTed.")
    events: list[Text] = Field(
        default_factory=lambda: ["all"],
        max_length=8,
        description=f"Any of {', '.join(EVENT_NAMES)}.",
    )
    secret: Text | None = Field(
        default=None,
        max_length=200,
        description="whsec_<base64> signing secret; one is made when none is given.",
    )


class SubscriptionOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: str


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="The signing secret: shown here only.")


class DeliveryOut(BaseModel):
    id: str
    subscription_id: str | None
    url: str | None
    session_id: str
    event: str
    state: str
    tries: int
    last_error: str | None
    last_status: int | None
    created_at: str
    delivered_at: str | None


@router.get("", responses=_ERRORS, summary="List subscriptions")
async def list_subscriptions(store: StoreDep, _: PrincipalDep) -> list[SubscriptionOut]:
    return [SubscriptionOut(**s.to_dict()) for s in await store.subscriptions.list()]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(limit_writes)],
    responses=_ERRORS,
    summary="Subscribe a URL to session events",
)
async def add_subscription(
    body: SubscriptionCreate, store: StoreDep, _: PrincipalDep
) -> SubscriptionCreated:
    sub = await store.subscriptions.add(body.url, list(body.events), body.secret)
    return SubscriptionCreated(**sub.to_dict(), secret=sub.secret)


@router.get("/deliveries", responses=_ERRORS, summary="Recent notifications and how they went")
async def list_deliveries(
    store: StoreDep, _: PrincipalDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[DeliveryOut]:
    return [DeliveryOut(**d.to_dict()) for d in await store.outbox.recent(limit)]


@router.delete(
    "/{sub_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(limit_writes)],
    responses=_ERRORS,
    summary="Remove a subscription",
)
async def remove_subscription(
    sub_id: Annotated[str, Path(max_length=64)], store: StoreDep, _: PrincipalDep
) -> None:
    await store.subscriptions.remove(sub_id)


# --- the dashboard's page ---

page_router = APIRouter(include_in_schema=False)


@page_router.get("/deliveries")
async def deliveries_page(request: Request, state: StateDep, viewer: ViewerDep) -> Response:

    subs = [
        {**s.to_dict(), "created": s.to_dict()["created_at"]}
        for s in await state.store.subscriptions.list()
    ]
    rows = [d.to_dict() for d in await state.store.outbox.recent(100)]
    context = {"subscriptions": subs, "deliveries": rows}
    return render(request, state, viewer, "deliveries.html", context)
