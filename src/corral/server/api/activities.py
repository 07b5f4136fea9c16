"""``/priorities`` and ``/activities``: the plot, as operators read it (SPEC §1.4)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from corral.activities import Activity
from corral.plot.service import Priority
from corral.server.api import pages
from corral.server.api.auth import READ, authorized, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.tagged_json import to_tagged

router = APIRouter(tags=["activities"])

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ms(when: dt.datetime | None) -> int:
    """A stored time as milliseconds since the epoch, exactly."""
    return 0 if when is None else (when - _EPOCH) // dt.timedelta(milliseconds=1)


class PriorityOut(BaseModel):
    name: str
    created_at: int
    instances: int = Field(description="Its active and suspended instances.")
    activities: int = Field(description="Activities in it (not under it).")

    @classmethod
    def of(cls, priority: Priority) -> PriorityOut:
        return cls.model_validate(priority, from_attributes=True)


class ActivityOut(BaseModel):
    """An activity as ``corral activities --json`` shows it (times ISO 8601), ``meta``
    as tagged JSON, and ``updated_ms``: its last change in milliseconds since the epoch,
    the order of the list."""

    id: str
    type: str
    title: str
    source: str | None
    start: str | None
    end: str | None
    done: bool | None
    meta: Any
    priority: str
    author: str | None
    created_at: str | None
    updated_at: str | None
    updated_ms: int
    notes: list[dict[str, Any]]

    @classmethod
    def of(cls, activity: Activity) -> ActivityOut:
        shown = activity.to_json()
        shown["meta"] = to_tagged(activity.meta)
        return cls(**shown, updated_ms=_ms(activity.updated_at))


@router.get("/priorities", dependencies=[Depends(authorized(READ))])
async def list_priorities(
    request: Request, limit: Limit = 50, cursor: Cursor = None
) -> Page[PriorityOut]:
    """Priorities by name (``team/backend`` after ``team``), with what they hold."""
    services = services_of(request)
    rows = await services.database.call(
        services.plot.priorities, after=pages.decode_name(cursor), limit=limit + 1
    )
    return pages.page(rows, limit, lambda p: (p.name,), PriorityOut.of)


@router.get("/activities", dependencies=[Depends(authorized(READ))])
async def list_activities(
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    priority: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Activities of this priority and the priorities under it.",
        ),
    ] = None,
) -> Page[ActivityOut]:
    """Activities, most recently changed first. An activity changed while you page
    moves to the front: it may be met again on a first page, or not met at all."""
    services = services_of(request)
    rows = await services.database.call(
        services.plot.activities, priority, before=pages.decode(cursor), limit=limit + 1
    )
    return pages.page(rows, limit, lambda a: (_ms(a.updated_at), a.id), ActivityOut.of)


@router.get("/activities/{activity_id}", dependencies=[Depends(authorized(READ))])
async def get_activity(request: Request, activity_id: str) -> ActivityOut:
    services = services_of(request)
    return ActivityOut.of(await services.database.call(services.plot.activity, activity_id))
