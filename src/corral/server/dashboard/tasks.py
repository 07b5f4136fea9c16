"""``/tasks``: the queue by state (``?state=dead``: the dead letters), one task, and
retrying or cancelling one task or every task a filter selects.

A bulk action is asked for, then confirmed: the first post answers with a page
saying how many tasks the filter selects now (nothing is changed yet), and only
its confirm button acts. What it did is said after, counted as it happened
(tasks may have come or gone in between).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from corral import codec
from corral.db.task_lists import STATES, TaskQuery
from corral.errors import DashboardError
from corral.server.api import pages
from corral.server.dashboard.executions import TRIGGERS
from corral.server.dashboard.sessions import Session
from corral.server.dashboard.web import (
    OPERATE,
    READ,
    cursor_of,
    field,
    form_of,
    now_ms,
    page_size,
    paged,
    query_choice,
    query_text,
    redirect,
    render,
    safe_next,
    services_of,
    view,
)
from corral.tagged_json import JsonValue, to_tagged
from corral.tasks.queue import BULK_ACTIONS, TaskInfo

STATE_NAMES: Final = tuple(STATES)
FILTERS: Final = ("state", "instance", "method", "trigger")
#: The most characters of a filter's value a bulk form takes.
_MAX_FILTER = 200


def _task_query(values: dict[str, str | None]) -> TaskQuery:
    return TaskQuery(
        instance=values.get("instance"),
        state=values.get("state"),
        method=values.get("method"),
        trigger=values.get("trigger"),
    )


def _filters_of(request: Request) -> dict[str, str | None]:
    return {
        "state": query_choice(request, "state", STATE_NAMES),
        "instance": query_text(request, "instance"),
        "method": query_text(request, "method"),
        "trigger": query_choice(request, "trigger", TRIGGERS),
    }


def _query_string(filters: dict[str, str | None]) -> str:
    return urlencode({name: value for name, value in filters.items() if value})


@view(READ)
async def tasks(request: Request, session: Session) -> Response:
    services = services_of(request)
    filters = _filters_of(request)
    limit = page_size(request)
    before = cursor_of(request, pages.decode_number)
    now = now_ms(services)
    rows = await services.database.call(
        services.queue.page, _task_query(filters), now=now, before=before, limit=limit + 1
    )
    listed = paged(rows, limit, lambda task: (task.id,))
    dead = filters["state"] == "dead"
    return render(
        request,
        "tasks.html",
        session,
        active="Dead letters" if dead else "Tasks",
        title="Dead letters" if dead else "Tasks",
        listed=listed,
        filters=filters,
        states=STATE_NAMES,
        triggers=TRIGGERS,
        filtered=any(filters.values()),
        can_bulk=any(filters.values()),
        back=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    )


def task_args(task: TaskInfo) -> JsonValue:
    """A task's arguments as tagged JSON (what its method is called with)."""
    try:
        return to_tagged(codec.decode(task.args))
    except (TypeError, ValueError) as exc:
        return {"$unreadable": str(exc)}


@view(READ)
async def task(request: Request, session: Session) -> Response:
    services = services_of(request)
    task_id = _task_id(request.path_params["task"])
    found = await services.database.call(services.queue.task, task_id)
    return render(
        request,
        "task.html",
        session,
        active="Dead letters" if found.state == "dead" else "Tasks",
        task=found,
        status=found.status(now_ms(services)),
        args=task_args(found),
        back=f"/tasks/{task_id}",
    )


def _task_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 19:
        raise DashboardError(
            404, "Not found", f"there is no task {raw[:40]!r}: task ids are numbers"
        )
    return int(raw)


async def _back(request: Request, task_id: int, instance: str) -> str:
    """Where an action on one task returns: the page it was taken on, unless that was
    the task's own page (the task may be gone by then): its instance's page."""
    back = safe_next(field(await form_of(request), "back"))
    return f"/instances/{instance}" if back in ("/", f"/tasks/{task_id}") else back


@view(OPERATE)
async def retry(request: Request, session: Session) -> Response:
    """Retry a dead letter: fresh attempts, due now."""
    services = services_of(request)
    task_id = _task_id(request.path_params["task"])
    found = await services.database.call(services.queue.task, task_id)
    await services.database.call(services.queue.retry_dead, task_id, now=now_ms(services))
    back = await _back(request, task_id, found.instance)
    return redirect(back, notice=f"Task {task_id} ({found.method}) is queued to run again.")


@view(OPERATE)
async def cancel(request: Request, session: Session) -> Response:
    """Cancel a task that is not running."""
    services = services_of(request)
    task_id = _task_id(request.path_params["task"])
    found = await services.database.call(services.queue.task, task_id)
    await services.database.call(services.queue.cancel, task_id)
    back = await _back(request, task_id, found.instance)
    return redirect(back, notice=f"Task {task_id} ({found.method}) was cancelled.")


@view(OPERATE)
async def bulk(request: Request, session: Session) -> Response:
    """Without ``confirm``: how many tasks the action would touch, and a button to
    confirm. With it: the action, then back to the list saying how many it touched."""
    services = services_of(request)
    form = await form_of(request)
    action = field(form, "action")
    if action not in BULK_ACTIONS:
        raise DashboardError(
            400, "Bad action", f"a bulk action is retry or cancel, got {action[:40]!r}"
        )
    filters: dict[str, str | None] = {}
    for name in FILTERS:
        value = field(form, name).strip()
        if len(value) > _MAX_FILTER:
            raise DashboardError(
                400, "Bad filter", f"{name} takes at most {_MAX_FILTER} characters"
            )
        filters[name] = value or None
    query = _task_query(filters)
    back = "/tasks" + (f"?{_query_string(filters)}" if any(filters.values()) else "")
    if field(form, "confirm") != "yes":
        count = await services.database.call(
            services.queue.bulk, action, query, now=now_ms(services), dry_run=True
        )
        return render(
            request,
            "confirm.html",
            session,
            active="Tasks",
            action=action,
            count=count,
            filters=filters,
            back=back,
        )
    done = await services.database.call(services.queue.bulk, action, query, now=now_ms(services))
    noun = "dead letter" if action == "retry" else "task"
    verb = "Queued again" if action == "retry" else "Cancelled"
    return redirect(back, notice=f"{verb}: {done} {noun}{'' if done == 1 else 's'}.")
