"""``/activities``: activities by priority (a priority shows those under it too),
most recently changed first; ``/activities/{id}``: one, with its notes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from corral.server.api import pages
from corral.server.dashboard.sessions import Session
from corral.server.dashboard.web import (
    READ,
    cursor_of,
    page_size,
    paged,
    query_text,
    render,
    services_of,
    view,
)

#: Priorities listed beside the activities (``corral priorities`` lists them all).
PRIORITIES_SHOWN: Final = 200


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(moment: datetime | None) -> int:
    """An activity's time as its cursor holds it: ms since the epoch, exactly."""
    assert moment is not None  # every stored activity has its times
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@view(READ)
async def activities(request: Request, session: Session) -> Response:
    services = services_of(request)
    priority = query_text(request, "priority")
    limit = page_size(request)
    before = cursor_of(request, pages.decode)
    priorities = await services.database.call(services.plot.priorities, limit=PRIORITIES_SHOWN)
    rows = await services.database.call(
        services.plot.activities, priority, limit=limit + 1, before=before
    )
    return render(
        request,
        "activities.html",
        session,
        active="Activities",
        priorities=priorities,
        priority=priority,
        listed=paged(rows, limit, lambda a: (_ms(a.updated_at), a.id)),
    )


@view(READ)
async def activity(request: Request, session: Session) -> Response:
    services = services_of(request)
    found = await services.database.call(services.plot.activity, request.path_params["activity"])
    return render(request, "activity.html", session, active="Activities", activity=found)
