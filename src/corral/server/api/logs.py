"""``/logs``: log lines, newest first; ``/logs/stream``: new lines as they are written."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from corral.runtime.history import LineQuery
from corral.server.api import pages
from corral.server.api.auth import READ, authorized, services_of
from corral.server.api.executions import LineOut
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import MAX_INT, Moment, Name, moment
from corral.server.api.streams import Streams, stream

router = APIRouter(tags=["logs"])

Level = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=20,
        description="Exactly this level: debug, info, warning, error, critical.",
    ),
]


@router.get("/logs", dependencies=[Depends(authorized(READ))])
async def list_logs(
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    instance: Name = None,
    execution: Name = None,
    level: Level = None,
    since: Moment = None,
) -> Page[LineOut]:
    """Log lines of executions and of the platform, newest first (by ``at``, their
    execution's start); ``since`` is inclusive. A failed execution's last line is its
    error (level ``error``)."""
    services = services_of(request)
    query = LineQuery(
        instance=instance, execution=execution, level=level, since=moment(since, "since")
    )
    rows = await services.database.call(
        services.history.lines_page, query, before=pages.decode_times(cursor), limit=limit + 1
    )
    return pages.page(rows, limit, lambda line: (line.at, line.id), LineOut.of)


@router.get(
    "/logs/stream",
    dependencies=[Depends(authorized(READ))],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events: each new line is an event whose id is the "
            "line's and whose data is the line as ``/logs`` shows it; ``end`` when the "
            "server stops.",
        },
        503: {"description": "The server has as many streams open as it keeps."},
    },
)
async def stream_logs(
    request: Request,
    instance: Name = None,
    last_event_id: Annotated[
        str | None,
        Header(max_length=40, description="Go on after this line (a browser sends it)."),
    ] = None,
) -> StreamingResponse:
    """New log lines as they are written (of one instance, or all), oldest first."""
    services = services_of(request)
    if instance is not None:
        await services.database.call(services.registry.instance, instance)  # 404 if none
    streams: Streams = request.app.state.streams
    tail = await services.database.call(services.history.tail, instance)
    if last_event_id is not None and last_event_id.strip().isdigit():
        tail.after = min(int(last_event_id.strip()), MAX_INT)

    async def poll() -> list[tuple[int | str, Any]]:
        lines = await services.database.call(tail.next)
        return [(line.id, LineOut.of(line).model_dump()) for line in lines]

    return stream(request, streams, poll)
