"""``/``: the overview — agents, instances by status, the queue, the last hour's
executions by outcome, suspended instances and dead letters."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from corral.db.overview import MINUTE_MS, OverviewDatabase
from corral.db.registry import SUSPENDED
from corral.db.task_lists import TaskQuery
from corral.runtime.registry import Instance
from corral.runtime.services import Services
from corral.server.dashboard.chart import Chart, executions_chart
from corral.server.dashboard.sessions import Session
from corral.server.dashboard.web import READ, now_ms, render, services_of, view
from corral.tasks.queue import TaskInfo

#: Suspended instances and dead letters the overview lists (their pages list all).
SHOWN = 10
CHART_MINUTES = 60


@dataclass(frozen=True)
class Overview:
    agents: list[tuple[str, int, int]]
    instances: dict[str, int]
    tasks: dict[str, int]
    chart: Chart
    suspended: list[Instance]
    dead: list[TaskInfo]


def read_overview(services: Services, *, now: int) -> Overview:
    """Everything the overview shows, read in a few aggregate statements."""
    database = OverviewDatabase(services.database)
    since = (now // MINUTE_MS - CHART_MINUTES + 1) * MINUTE_MS
    return Overview(
        agents=services.registry.agents(),
        instances=database.instances_by_status(),
        tasks=database.tasks_by_state(now=now),
        chart=executions_chart(
            database.executions_by_minute(since=since), now_ms=now, minutes=CHART_MINUTES
        ),
        suspended=services.registry.instances_page(
            status=SUSPENDED, agent=None, priority=None, before=None, limit=SHOWN
        ),
        dead=services.queue.page(TaskQuery(state="dead"), now=now, limit=SHOWN),
    )


@view(READ)
async def overview(request: Request, session: Session) -> Response:
    services = services_of(request)
    now = now_ms(services)
    data = await services.database.call(read_overview, services, now=now)
    return render(request, "overview.html", session, overview=data, shown=SHOWN)
