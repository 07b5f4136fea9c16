"""``/webhooks``, their ``deliveries`` (the delivery log), and replaying a delivery."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from corral import codec
from corral.runtime.webhooks import Delivery, DeliveryView, Webhook
from corral.server.api import pages
from corral.server.api.auth import OPERATE, READ, authorized, now_ms, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import Name
from corral.tagged_json import to_tagged

router = APIRouter(tags=["webhooks"])


class WebhookOut(BaseModel):
    """A live webhook; ``url`` is its capability: whoever has it can deliver. ``kind``
    ``tick`` is a plugin's tick endpoint."""

    id: str
    url: str
    instance: str
    method: str
    args: Any = Field(description="The extra arguments a delivery passes, as tagged JSON.")
    mode: str
    kind: str
    verify: str | None = Field(description="The verifier's scheme; its secret is never shown.")
    max_body_bytes: int | None
    created_at: int

    @classmethod
    def of(cls, webhook: Webhook, public_url: str) -> WebhookOut:
        return cls(
            id=webhook.id,
            url=webhook.url(public_url),
            instance=webhook.instance,
            method=webhook.method,
            args=to_tagged(codec.decode(webhook.args)),
            mode=webhook.mode,
            kind=webhook.kind,
            verify=None if webhook.verify is None else str(webhook.verify.get("scheme")),
            max_body_bytes=webhook.max_body_bytes,
            created_at=webhook.created_at,
        )


class DeliveryOut(BaseModel):
    """A delivery as received, and what came of it: ``status`` is ``queued``,
    ``running``, ``dead``, ``cancelled``, ``not_run`` or its latest execution's outcome;
    ``code`` the HTTP status its sender got (null for a replay, or a sync one still
    running). The body is base64."""

    id: str
    webhook_id: str
    instance: str
    received_at: int
    method: str
    query: str
    headers: list[tuple[str, str]]
    body_base64: str
    mode: str
    replay_of: str | None
    sender_id: str | None = Field(description="The sender's delivery id, when it gave one.")
    duplicates: int = Field(description="Repeats of it answered from it.")
    status: str
    code: int | None
    latency_ms: float | None
    execution: str | None = Field(description="Its latest execution's id.")

    @classmethod
    def of(cls, view: DeliveryView) -> DeliveryOut:
        d = view.delivery
        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            instance=d.instance,
            received_at=d.received_at,
            method=d.method,
            query=d.query,
            headers=d.headers,
            body_base64=base64.b64encode(d.body).decode(),
            mode=d.mode,
            replay_of=d.replay_of,
            sender_id=d.dedupe_key,
            duplicates=d.duplicates,
            status=view.status,
            code=view.code,
            latency_ms=view.latency_ms,
            execution=view.execution,
        )


class ReplayOut(BaseModel):
    """The new delivery a replay made, queued to run as a task."""

    id: str
    replay_of: str
    webhook_id: str
    instance: str
    received_at: int

    @classmethod
    def of(cls, delivery: Delivery) -> ReplayOut:
        assert delivery.replay_of is not None
        return cls.model_validate(delivery, from_attributes=True)


@router.get("/webhooks", dependencies=[Depends(authorized(READ))])
async def list_webhooks(
    request: Request, limit: Limit = 50, cursor: Cursor = None, instance: Name = None
) -> Page[WebhookOut]:
    """Live webhooks (plugins' tick endpoints too), newest first."""
    services = services_of(request)
    rows = await services.database.call(
        services.webhooks.webhooks_page, instance, before=pages.decode(cursor), limit=limit + 1
    )
    public_url = services.webhooks.public_url
    return pages.page(
        rows, limit, lambda w: (w.created_at, w.id), lambda w: WebhookOut.of(w, public_url)
    )


@router.get("/webhooks/{webhook_id}/deliveries", dependencies=[Depends(authorized(READ))])
async def list_deliveries(
    request: Request, webhook_id: str, limit: Limit = 50, cursor: Cursor = None
) -> Page[DeliveryOut]:
    """The webhook's deliveries, newest first (``webhook_id``: its id, or its token),
    kept for ``[retention] deliveries_days``."""
    services = services_of(request)
    rows = await services.database.call(
        services.webhooks.deliveries_page, webhook_id, before=pages.decode(cursor), limit=limit + 1
    )
    return pages.page(
        rows, limit, lambda v: (v.delivery.received_at, v.delivery.id), DeliveryOut.of
    )


@router.post(
    "/deliveries/{delivery_id}/replay", status_code=202, dependencies=[Depends(authorized(OPERATE))]
)
async def replay(request: Request, delivery_id: str) -> ReplayOut:
    """Deliver it again: a new delivery like it (``replay_of`` it), queued to run as a
    task, whatever the webhook's mode."""
    services = services_of(request)
    delivery = await services.database.call(
        services.webhooks.replay, delivery_id, now=now_ms(services)
    )
    return ReplayOut.of(delivery)
