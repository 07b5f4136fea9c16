"""``/instances``: installed agents, and installing and uninstalling them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from corral.runtime.registry import Instance
from corral.server.api import pages
from corral.server.api.auth import OPERATE, READ, authorized, now_ms, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import Text

router = APIRouter(tags=["instances"])

Status = Literal["active", "suspended", "uninstalling", "removed"]


class InstanceOut(BaseModel):
    id: str
    agent: str
    priority: str
    status: Status
    status_reason: str | None
    config: dict[str, Any]
    created_at: int = Field(description="Milliseconds since the epoch.")

    @classmethod
    def of(cls, instance: Instance) -> InstanceOut:
        return cls.model_validate(instance, from_attributes=True)


class Install(BaseModel):
    agent: Text = Field(min_length=1, max_length=200)
    priority: Text = Field(default="default", min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)


@router.get("/instances", dependencies=[Depends(authorized(READ))])
async def list_instances(
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Status | None = None,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    priority: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[InstanceOut]:
    """Instances, newest first (removed ones only with ``status=removed``)."""
    services = services_of(request)
    rows = await services.database.call(
        services.registry.instances_page,
        status=status,
        agent=agent,
        priority=priority,
        before=pages.decode(cursor),
        limit=limit + 1,
    )
    return pages.page(rows, limit, lambda i: (i.created_at, i.id), InstanceOut.of)


@router.get("/instances/{instance_id}", dependencies=[Depends(authorized(READ))])
async def get_instance(request: Request, instance_id: str) -> InstanceOut:
    services = services_of(request)
    return InstanceOut.of(await services.database.call(services.registry.instance, instance_id))


@router.post("/instances", status_code=201, dependencies=[Depends(authorized(OPERATE))])
async def install(request: Request, body: Install) -> InstanceOut:
    """Install an agent for a priority; its ``activate`` runs as a task."""
    services = services_of(request)
    instance = await services.database.call(
        services.registry.install,
        body.agent,
        priority=body.priority,
        config=body.config,
        now=now_ms(services),
    )
    return InstanceOut.of(instance)


@router.delete(
    "/instances/{instance_id}", status_code=202, dependencies=[Depends(authorized(OPERATE))]
)
async def uninstall(request: Request, instance_id: str) -> InstanceOut:
    """Uninstall: ``deactivate`` runs as a task, then the instance's data goes."""
    services = services_of(request)
    now = now_ms(services)
    await services.database.call(services.registry.uninstall, instance_id, now=now)
    return InstanceOut.of(await services.database.call(services.registry.instance, instance_id))
