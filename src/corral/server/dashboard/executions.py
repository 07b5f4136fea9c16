"""``/executions``: every execution, filtered as the API filters them and searched in
errors and logs, a page at a time with no cap; ``/executions/{id}``: one record,
what caused it, and re-running it."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from corral.db.history import ExecutionQuery
from corral.errors import DashboardError
from corral.runtime.history import ExecutionDetail
from corral.runtime.services import Services
from corral.sandbox.limits import Outcome
from corral.server.api import pages
from corral.server.dashboard.sessions import Session
from corral.server.dashboard.web import (
    OPERATE,
    READ,
    Paged,
    cursor_of,
    now_ms,
    page_size,
    paged,
    query_choice,
    query_moment,
    query_text,
    redirect,
    render,
    services_of,
    view,
)

TRIGGERS: Final = ("task", "webhook", "lifecycle", "activity", "tick", "exec")
OUTCOMES: Final = tuple(outcome.value for outcome in Outcome)


def execution_query(request: Request) -> ExecutionQuery:
    """The filters of ``/executions`` (the API's names; ``q`` searches)."""
    return ExecutionQuery(
        instance=query_text(request, "instance"),
        agent=query_text(request, "agent"),
        method=query_text(request, "method"),
        trigger=query_choice(request, "trigger", TRIGGERS),
        outcome=query_choice(request, "outcome", OUTCOMES),
        since=query_moment(request, "since"),
        until=query_moment(request, "until"),
        text=query_text(request, "q"),
    )


@view(READ)
async def executions(request: Request, session: Session) -> Response:
    services = services_of(request)
    query = execution_query(request)
    limit = page_size(request)
    before = cursor_of(request, pages.decode)
    found = await services.database.call(
        services.history.executions_page, query, before=before, limit=limit + 1
    )
    listed = paged(found.rows, limit, lambda e: (e.started_at, e.id))
    searched_to = None  # a search that stopped short of a page: how far back it read
    if listed.next_cursor is None and found.searched_to is not None:
        listed = Paged(listed.rows, pages.encode(found.searched_to))
        searched_to = found.searched_to[0]
    return render(
        request,
        "executions.html",
        session,
        active="Executions",
        listed=listed,
        searched_to=searched_to,
        query=query,
        triggers=TRIGGERS,
        outcomes=OUTCOMES,
        filtered=any(
            request.query_params.get(name)
            for name in ("instance", "agent", "method", "trigger", "outcome", "since", "until", "q")
        ),
    )


def rerun_offer(detail: ExecutionDetail) -> tuple[str | None, str]:
    """How this execution can run again: (the action, or None, and what it does or why
    it cannot). A run is repeated from what the database still holds of its cause: a
    webhook's delivery is replayed; a task kept as a dead letter is retried. A task
    that finished is deleted with its arguments, so its run cannot be repeated."""
    summary = detail.summary
    if detail.delivery is not None:
        return "replay", (
            f"Replays delivery {detail.delivery.id}: a new delivery with the same request, "
            "queued as a task."
        )
    if summary.delivery_id is not None:
        return None, (
            f"Its delivery {summary.delivery_id} is gone (deliveries are kept for the "
            "configured retention), so it cannot be replayed."
        )
    if detail.task is not None:
        if detail.task.state == "dead":
            return "retry", (
                f"Retries task {detail.task.id}, a dead letter: it runs again with fresh attempts."
            )
        return None, (
            f"Its task {detail.task.id} is {detail.task.state} already "
            f"(attempt {detail.task.attempts} of {detail.task.max_attempts}): it runs again by "
            "itself."
        )
    if summary.task_id is not None:
        return None, (
            f"Its task {summary.task_id} finished and was removed with its arguments, so this "
            "run cannot be repeated as it was."
        )
    return None, f"A {summary.trigger} execution ran no stored task or delivery to repeat."


@view(READ)
async def execution(request: Request, session: Session) -> Response:
    services = services_of(request)
    detail = await services.database.call(
        services.history.execution, request.path_params["execution"]
    )
    action, explained = rerun_offer(detail)
    return render(
        request,
        "execution.html",
        session,
        active="Executions",
        detail=detail,
        summary=detail.summary,
        rerun=action,
        rerun_explained=explained,
    )


def _rerun(services: Services, execution_id: str, *, now: int) -> str:
    """Run the execution again as ``rerun_offer`` says; a line saying what was done."""
    detail = services.history.execution(execution_id)
    action, explained = rerun_offer(detail)
    if action == "replay":
        assert detail.delivery is not None
        replayed = services.webhooks.replay(detail.delivery.id, now=now)
        return f"Replayed delivery {detail.delivery.id} as {replayed.id}: it runs as a task."
    if action == "retry":
        assert detail.task is not None
        services.queue.retry_dead(detail.task.id, now=now)
        return f"Task {detail.task.id} is queued to run again."
    raise DashboardError(409, "Cannot re-run this execution", explained)


@view(OPERATE)
async def rerun(request: Request, session: Session) -> Response:
    services = services_of(request)
    execution_id = request.path_params["execution"]
    notice = await services.database.call(_rerun, services, execution_id, now=now_ms(services))
    return redirect(f"/executions/{execution_id}", notice=notice)
