"""``/logs``: the newest log lines (of one instance, or all), live: new lines arrive
over Server-Sent Events (``/logs/stream``) while the page is open, with a pause.

The stream is the admin API's (``corral.server.api.streams``): bounded per server,
ended when the client leaves or the server stops, resumed after the last line a
browser saw (``Last-Event-ID``, or ``?after=``). Without JavaScript the page shows
the lines as they were when it was loaded.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from corral.db.history import LineQuery
from corral.errors import ApiError, DashboardError
from corral.runtime.history import LogLine, Tail
from corral.server.api import pages
from corral.server.api.streams import Streams, stream
from corral.server.dashboard.sessions import Session
from corral.server.dashboard.web import (
    READ,
    cursor_of,
    iso_time,
    page_size,
    paged,
    query_choice,
    query_int,
    query_text,
    render,
    services_of,
    utc_time,
    view,
)

LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_MAX_ID = 2**63 - 1


@view(READ)
async def logs(request: Request, session: Session) -> Response:
    services = services_of(request)
    instance = query_text(request, "instance")
    level = query_choice(request, "level", LEVELS)
    limit = page_size(request)
    before = cursor_of(request, pages.decode_times)
    if instance is not None:
        await services.database.call(services.registry.instance, instance)  # 404 if none
    rows = await services.database.call(
        services.history.lines_page,
        LineQuery(instance=instance, level=level),
        before=before,
        limit=limit + 1,
    )
    listed = paged(rows, limit, lambda line: (line.at, line.id))
    # The live tail goes on after the newest line shown.
    newest = max((line.id for line in listed.rows), default=0)
    return render(
        request,
        "logs.html",
        session,
        active="Logs",
        lines=list(reversed(listed.rows)),
        listed=listed,
        instance=instance,
        level=level,
        levels=LEVELS,
        live=before is None and level is None,
        newest=newest,
    )


def line_event(line: LogLine) -> dict[str, Any]:
    """A line as the tail's script shows it."""
    return {
        "id": line.id,
        "instance": line.instance,
        "execution": line.execution,
        "at": utc_time(line.at),
        "at_iso": iso_time(line.at),
        "level": line.level,
        "line": line.line,
    }


@view(READ)
async def logs_stream(request: Request, session: Session) -> Response:
    """New lines, as events, after ``?after=`` (or the browser's ``Last-Event-ID``)."""
    services = services_of(request)
    instance = query_text(request, "instance")
    if instance is not None:
        await services.database.call(services.registry.instance, instance)  # 404 if none
    after = query_int(request, "after", -1, low=0, high=_MAX_ID)
    resumed = request.headers.get("last-event-id", "").strip()
    if resumed.isdigit() and len(resumed) < 19:
        after = max(after, int(resumed))
    if after < 0:
        tail = await services.database.call(services.history.tail, instance)
    else:
        tail = Tail(services.database, instance, after=after)

    async def poll() -> list[tuple[int | str, Any]]:
        lines = await services.database.call(tail.next)
        return [(line.id, line_event(line)) for line in lines]

    streams: Streams = request.app.state.streams
    try:
        return stream(request, streams, poll)
    except ApiError as exc:
        raise DashboardError(exc.status, "Live tail unavailable", exc.message) from None
