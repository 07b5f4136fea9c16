"""``/instances``: installed agents; ``/instances/{id}``: one instance, with its
executions, tasks, webhooks and deliveries, logs, and a browser of its store
(typed values, and how long each key with a TTL has left)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from corral.db.history import ExecutionQuery, LineQuery
from corral.db.state import state_sql
from corral.db.task_lists import TaskQuery
from corral.errors import DashboardError
from corral.runtime.history import ExecutionSummary, LogLine
from corral.runtime.registry import Instance
from corral.runtime.services import Services
from corral.runtime.state_browser import Entry
from corral.runtime.webhooks import DeliveryView, Webhook
from corral.server.api import pages
from corral.server.dashboard.sessions import Session
from corral.server.dashboard.web import (
    READ,
    Paged,
    cursor_of,
    now_ms,
    page_size,
    paged,
    query_choice,
    query_text,
    render,
    services_of,
    view,
)
from corral.tasks.queue import TaskInfo

STATUSES: Final = ("active", "suspended", "uninstalling", "removed")
#: Rows of each section the instance page shows (each links to its whole list).
SECTION_ROWS: Final = 10
LOG_LINES: Final = 20
#: Webhooks whose newest deliveries the instance page shows.
WEBHOOKS_SHOWN: Final = 10
DELIVERIES_SHOWN: Final = 5
STATE_PAGE: Final = 50


@view(READ)
async def instances(request: Request, session: Session) -> Response:
    services = services_of(request)
    status = query_choice(request, "status", STATUSES)
    agent = query_text(request, "agent")
    priority = query_text(request, "priority")
    limit = page_size(request)
    before = cursor_of(request, pages.decode)
    rows = await services.database.call(
        services.registry.instances_page,
        status=status,
        agent=agent,
        priority=priority,
        before=before,
        limit=limit + 1,
    )
    return render(
        request,
        "instances.html",
        session,
        active="Instances",
        listed=paged(rows, limit, lambda i: (i.created_at, i.id)),
        statuses=STATUSES,
        status=status,
        agent=agent,
        priority=priority,
    )


@dataclass(frozen=True)
class InstancePage:
    instance: Instance
    executions: list[ExecutionSummary]
    tasks: list[TaskInfo]
    webhooks: list[tuple[Webhook, list[DeliveryView]]]
    logs: list[LogLine]
    newest_line: int
    state: Paged[Entry]
    usage: tuple[int, int]


def read_instance(
    services: Services, instance_id: str, *, prefix: str, after: str | None, now: int
) -> InstancePage:
    instance = services.registry.instance(instance_id)
    webhooks = services.webhooks.webhooks_page(instance_id, limit=WEBHOOKS_SHOWN)
    logs = services.history.lines_page(LineQuery(instance=instance_id), limit=LOG_LINES)
    entries = services.state_browser.entries(
        instance_id, prefix=prefix, after=after, now=now, limit=STATE_PAGE + 1
    )
    return InstancePage(
        instance=instance,
        executions=services.history.executions_page(
            ExecutionQuery(instance=instance_id), limit=SECTION_ROWS
        ).rows,
        tasks=services.queue.page(TaskQuery(instance=instance_id), now=now, limit=SECTION_ROWS),
        webhooks=[
            (webhook, services.webhooks.deliveries_page(webhook.id, limit=DELIVERIES_SHOWN))
            for webhook in webhooks
        ],
        logs=list(reversed(logs)),
        newest_line=max((line.id for line in logs), default=0),
        state=paged(entries, STATE_PAGE, lambda entry: (entry.key,)),
        usage=state_sql(services.database).usage(instance_id),
    )


@view(READ)
async def instance(request: Request, session: Session) -> Response:
    services = services_of(request)
    prefix = query_text(request, "prefix", max_length=1024) or ""
    after = cursor_of(request, pages.decode_name)
    page = await services.database.call(
        read_instance,
        services,
        request.path_params["instance"],
        prefix=prefix,
        after=after,
        now=now_ms(services),
    )
    return render(
        request,
        "instance.html",
        session,
        active="Instances",
        page=page,
        instance=page.instance,
        prefix=prefix,
        public_url=services.webhooks.public_url,
    )


@view(READ)
async def state_value(request: Request, session: Session) -> Response:
    """One key of an instance's store, its value whatever its size."""
    services = services_of(request)
    instance_id = request.path_params["instance"]
    key = request.path_params["key"]
    await services.database.call(services.registry.instance, instance_id)
    entry = await services.database.call(
        services.state_browser.entry, instance_id, key, now=now_ms(services)
    )
    if entry is None:
        raise DashboardError(
            404, "No such key", f"{instance_id} has no key {key!r} (never set, deleted, or expired)"
        )
    return render(
        request, "state_value.html", session, active="Instances", instance=instance_id, entry=entry
    )
