"""``/webhooks``: every live webhook; ``/webhooks/{id}``: its deliveries, each with
its status, its answer and its latest execution, and replaying one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from corral.server.api import pages
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
    query_text,
    redirect,
    render,
    safe_next,
    services_of,
    view,
)

#: The most bytes of a delivery's body its row shows.
BODY_SHOWN = 4096


@view(READ)
async def webhooks(request: Request, session: Session) -> Response:
    services = services_of(request)
    instance = query_text(request, "instance")
    limit = page_size(request)
    before = cursor_of(request, pages.decode)
    rows = await services.database.call(
        services.webhooks.webhooks_page, instance, before=before, limit=limit + 1
    )
    return render(
        request,
        "webhooks.html",
        session,
        active="Webhooks",
        listed=paged(rows, limit, lambda w: (w.created_at, w.id)),
        instance=instance,
        public_url=services.webhooks.public_url,
    )


def shown_body(body: bytes) -> str:
    """A delivery's body as text to read: UTF-8 where it is (else escaped), cut short."""
    text = body[:BODY_SHOWN].decode("utf-8", errors="backslashreplace")
    return text + (f"… ({len(body) - BODY_SHOWN} more bytes)" if len(body) > BODY_SHOWN else "")


@view(READ)
async def webhook(request: Request, session: Session) -> Response:
    services = services_of(request)
    found = await services.database.call(services.webhooks.webhook, request.path_params["webhook"])
    limit = page_size(request)
    before = cursor_of(request, pages.decode)
    rows = await services.database.call(
        services.webhooks.deliveries_page, found.id, before=before, limit=limit + 1
    )
    return render(
        request,
        "webhook.html",
        session,
        active="Webhooks",
        webhook=found,
        listed=paged(rows, limit, lambda d: (d.delivery.received_at, d.delivery.id)),
        public_url=services.webhooks.public_url,
        body=shown_body,
        back=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    )


@view(OPERATE)
async def replay(request: Request, session: Session) -> Response:
    """A new delivery like this one, queued to run as a task."""
    services = services_of(request)
    delivery_id = request.path_params["delivery"]
    replayed = await services.database.call(
        services.webhooks.replay, delivery_id, now=now_ms(services)
    )
    back = safe_next(field(await form_of(request), "back"))
    if back == "/":
        back = f"/webhooks/{replayed.webhook_id}"
    return redirect(back, notice=f"Replayed {delivery_id} as {replayed.id}: it runs as a task.")
