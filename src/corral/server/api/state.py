"""``/instances/{id}/state``: an instance's store, read: keys, typed values, TTL left."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from corral.runtime.state_browser import Entry
from corral.server.api import pages
from corral.server.api.auth import READ, ApiError, authorized, now_ms, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.state.store import MAX_KEY_BYTES

router = APIRouter(tags=["state"])


class EntryOut(BaseModel):
    """A key and its value as tagged JSON (``{"$tuple": [...]}``, ``{"$datetime": ...}``:
    the types JSON lacks keep a tag). A page leaves out a value over 64 KiB encoded
    (``omitted``; read it by its key)."""

    key: str
    value: Any
    omitted: bool
    size: int = Field(description="The value's size, encoded (bytes).")
    expires_at: int | None = Field(description="Milliseconds since the epoch; null: never.")
    ttl_ms: int | None = Field(description="Milliseconds left as it was read; null: never.")

    @classmethod
    def of(cls, entry: Entry) -> EntryOut:
        return cls.model_validate(entry, from_attributes=True)


@router.get("/instances/{instance_id}/state", dependencies=[Depends(authorized(READ))])
async def list_state(
    request: Request,
    instance_id: str,
    limit: Limit = 50,
    cursor: Cursor = None,
    prefix: Annotated[str, Query(max_length=MAX_KEY_BYTES)] = "",
) -> Page[EntryOut]:
    """The instance's live keys starting with ``prefix``, ascending by key (code point),
    a page at a time."""
    services = services_of(request)
    await services.database.call(services.registry.instance, instance_id)  # 404 if none
    rows = await services.database.call(
        services.state_browser.entries,
        instance_id,
        prefix=prefix,
        after=pages.decode_name(cursor),
        now=now_ms(services),
        limit=limit + 1,
    )
    return pages.page(rows, limit, lambda e: (e.key,), EntryOut.of)


@router.get("/instances/{instance_id}/state/{key:path}", dependencies=[Depends(authorized(READ))])
async def get_state(request: Request, instance_id: str, key: str) -> EntryOut:
    """One key, its value whatever its size; 404 if it is missing (never set, deleted or
    expired)."""
    services = services_of(request)
    await services.database.call(services.registry.instance, instance_id)
    entry = await services.database.call(
        services.state_browser.entry, instance_id, key, now=now_ms(services)
    )
    if entry is None:
        raise ApiError(
            404,
            "not_found",
            f"no key {key!r:.200} in {instance_id} (never set, deleted or expired)",
        )
    return EntryOut.of(entry)
