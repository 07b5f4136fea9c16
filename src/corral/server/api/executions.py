"""``/executions``: what ran, filtered and searched; ``/executions/{id}``: one in full."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from corral.runtime.history import (
    MAX_SEARCH,
    DeliveryCause,
    ExecutionQuery,
    ExecutionSummary,
    LogLine,
    TaskCause,
)
from corral.server.api import pages
from corral.server.api.auth import READ, authorized, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import Moment, Name, moment

router = APIRouter(tags=["executions"])


class ExecutionOut(BaseModel):
    """An execution as lists show it; times in milliseconds since the epoch."""

    id: str
    instance: str
    version: int | None
    method: str
    trigger: str
    outcome: str
    error: str | None = Field(description="How it failed, in one line; null if it did not.")
    requests_used: int
    cpu_ms: float
    peak_rss_bytes: int
    duration_ms: float
    started_at: int
    task_id: int | None
    delivery_id: str | None

    @classmethod
    def of(cls, e: ExecutionSummary) -> ExecutionOut:
        return cls(
            id=e.id,
            instance=e.instance,
            version=e.version,
            method=e.method,
            trigger=e.trigger,
            outcome=e.outcome,
            error=e.error_line,
            requests_used=e.requests_used,
            cpu_ms=e.cpu_ms,
            peak_rss_bytes=e.peak_rss_bytes,
            duration_ms=e.duration_ms,
            started_at=e.started_at,
            task_id=e.task_id,
            delivery_id=e.delivery_id,
        )


class LineOut(BaseModel):
    """A log line; ``execution`` is null for the platform's own lines."""

    id: int
    instance: str
    execution: str | None
    at: int = Field(description="Milliseconds since the epoch (its execution's start).")
    level: str
    line: str

    @classmethod
    def of(cls, line: LogLine) -> LineOut:
        return cls.model_validate(line, from_attributes=True)


class TaskCauseOut(BaseModel):
    """The task it ran, while that task is still there (retried or dead-lettered)."""

    id: int
    state: str
    attempts: int
    max_attempts: int
    run_at: int
    last_error: str | None

    @classmethod
    def of(cls, task: TaskCause) -> TaskCauseOut:
        return cls.model_validate(task, from_attributes=True)


class DeliveryCauseOut(BaseModel):
    """The webhook delivery it ran for."""

    id: str
    webhook_id: str
    received_at: int
    method: str
    mode: str
    replay_of: str | None

    @classmethod
    def of(cls, delivery: DeliveryCause) -> DeliveryCauseOut:
        return cls.model_validate(delivery, from_attributes=True)


class ExecutionDetailOut(ExecutionOut):
    """One execution in full: its result (tagged JSON, as ``corral executions --json``),
    its error (type, message, traceback), every line it logged, and what caused it."""

    result: Any
    error_detail: dict[str, Any] | None
    logs: list[LineOut]
    task: TaskCauseOut | None
    delivery: DeliveryCauseOut | None


@router.get("/executions", dependencies=[Depends(authorized(READ))])
async def list_executions(
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    instance: Name = None,
    agent: Name = None,
    method: Name = None,
    trigger: Name = None,
    outcome: Name = None,
    since: Moment = None,
    until: Moment = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_SEARCH,
            description="Text looked for, case-insensitively, in the error (type, message, "
            "traceback) and the log lines.",
        ),
    ] = None,
) -> Page[ExecutionOut]:
    """Executions, newest first (by start), filtered; every filter is exact but ``q``.
    ``since`` is inclusive, ``until`` exclusive. A search (``q``) reads a share of the
    history per request: a page of it may hold fewer items than ``limit``, even none,
    and still have a ``next_cursor`` to search older executions."""
    services = services_of(request)
    query = ExecutionQuery(
        instance=instance,
        agent=agent,
        method=method,
        trigger=trigger,
        outcome=outcome,
        since=moment(since, "since"),
        until=moment(until, "until"),
        text=q,
    )
    found = await services.database.call(
        services.history.executions_page, query, before=pages.decode(cursor), limit=limit + 1
    )
    return pages.page(
        found.rows,
        limit,
        lambda e: (e.started_at, e.id),
        ExecutionOut.of,
        resume=found.searched_to,
    )


@router.get("/executions/{execution_id}", dependencies=[Depends(authorized(READ))])
async def get_execution(request: Request, execution_id: str) -> ExecutionDetailOut:
    services = services_of(request)
    found = await services.database.call(services.history.execution, execution_id)
    return ExecutionDetailOut(
        **ExecutionOut.of(found.summary).model_dump(),
        result=found.result,
        error_detail=found.error,
        logs=[LineOut.of(line) for line in found.logs],
        task=None if found.task is None else TaskCauseOut.of(found.task),
        delivery=None if found.delivery is None else DeliveryCauseOut.of(found.delivery),
    )
