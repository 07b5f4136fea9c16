"""``/tasks``: the queue and its dead letters; retry, cancel, and both by filter."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from corral import codec
from corral.db.task_lists import TaskQuery
from corral.server.api import pages
from corral.server.api.auth import OPERATE, READ, authorized, now_ms, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import Name, TaskId
from corral.tagged_json import to_tagged
from corral.tasks.queue import TaskInfo

router = APIRouter(tags=["tasks"])

State = Literal["ready", "scheduled", "running", "dead"]
_NAME = Field(default=None, min_length=1, max_length=200)


class TaskOut(BaseModel):
    """A task; times in milliseconds since the epoch. ``state``: ``ready`` (queued and
    due), ``scheduled`` (queued for later, or recurring every ``interval_ms``),
    ``running`` or ``dead`` (out of attempts, kept until retried or cancelled)."""

    id: int
    instance: str
    trigger: str
    method: str
    args: Any = Field(description="Its arguments, as tagged JSON.")
    key: str | None
    interval_ms: int | None
    state: State
    run_at: int
    attempts: int
    max_attempts: int
    lease_until: int | None
    leased_by: str | None
    last_error: str | None
    created_at: int

    @classmethod
    def of(cls, task: TaskInfo, now: int) -> TaskOut:
        try:
            args = to_tagged(codec.decode(task.args))
        except (TypeError, ValueError) as exc:  # never expected: the queue encoded them
            args = {"$unreadable": str(exc)}
        return cls(
            id=task.id,
            instance=task.instance,
            trigger=task.trigger,
            method=task.method,
            args=args,
            key=task.key,
            interval_ms=task.interval_ms,
            state=task.status(now),  # type: ignore[arg-type]
            run_at=task.run_at,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            lease_until=task.lease_until,
            leased_by=task.leased_by,
            last_error=task.last_error,
            created_at=task.created_at,
        )


class TaskFilter(BaseModel):
    """Which tasks a bulk action takes: at least one field."""

    instance: str | None = _NAME
    state: State | None = None
    method: str | None = _NAME
    trigger: str | None = _NAME


class Bulk(BaseModel):
    """Retry the dead letters a filter selects, or cancel the tasks it selects that are
    not running. ``dry_run``: only count them (what to show before asking to confirm)."""

    action: Literal["retry", "cancel"]
    filter: TaskFilter
    dry_run: bool = False


class BulkOut(BaseModel):
    action: Literal["retry", "cancel"]
    dry_run: bool
    count: int = Field(description="Tasks retried or cancelled (with dry_run: that would be).")


class Changed(BaseModel):
    id: int
    done: Literal["retried", "cancelled"]


@router.get("/tasks", dependencies=[Depends(authorized(READ))])
async def list_tasks(
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: State | None = None,
    instance: Name = None,
    method: Name = None,
    trigger: Name = None,
) -> Page[TaskOut]:
    """Tasks, newest first (by creation), filtered."""
    services = services_of(request)
    now = now_ms(services)
    query = TaskQuery(instance=instance, state=state, method=method, trigger=trigger)
    rows = await services.database.call(
        services.queue.page, query, now=now, before=pages.decode_number(cursor), limit=limit + 1
    )
    return pages.page(rows, limit, lambda t: (t.id,), lambda t: TaskOut.of(t, now))


@router.get("/tasks/{task_id}", dependencies=[Depends(authorized(READ))])
async def get_task(request: Request, task_id: TaskId) -> TaskOut:
    services = services_of(request)
    return TaskOut.of(await services.database.call(services.queue.task, task_id), now_ms(services))


@router.post("/tasks/bulk", dependencies=[Depends(authorized(OPERATE))])
async def bulk(request: Request, body: Bulk) -> BulkOut:
    """Retry or cancel every task a filter selects, and say how many. A filter is
    required; ``retry`` takes dead letters only, ``cancel`` never a running task. Send
    ``dry_run`` first to learn the count, show it, then send the same without it (the
    answer's count is what was changed: tasks may have come or gone between)."""
    services = services_of(request)
    f = body.filter
    query = TaskQuery(instance=f.instance, state=f.state, method=f.method, trigger=f.trigger)
    count = await services.database.call(
        services.queue.bulk, body.action, query, now=now_ms(services), dry_run=body.dry_run
    )
    return BulkOut(action=body.action, dry_run=body.dry_run, count=count)


@router.post("/tasks/{task_id}/retry", dependencies=[Depends(authorized(OPERATE))])
async def retry(request: Request, task_id: TaskId) -> Changed:
    """Give a dead-lettered task a fresh set of attempts, due now."""
    services = services_of(request)
    await services.database.call(services.queue.retry_dead, task_id, now=now_ms(services))
    return Changed(id=task_id, done="retried")


@router.post("/tasks/{task_id}/cancel", dependencies=[Depends(authorized(OPERATE))])
async def cancel(request: Request, task_id: TaskId) -> Changed:
    """Remove a ready, scheduled or dead task (a running one finishes first)."""
    services = services_of(request)
    await services.database.call(services.queue.cancel, task_id)
    return Changed(id=task_id, done="cancelled")
