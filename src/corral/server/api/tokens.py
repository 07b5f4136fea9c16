"""``/tokens``: the admin API's own tokens (scope ``admin``), as ``corral tokens`` does."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from corral.runtime.tokens import Token
from corral.server.api import pages
from corral.server.api.auth import ADMIN, authorized, now_ms, services_of
from corral.server.api.pages import Cursor, Limit, Page
from corral.server.api.params import Text

router = APIRouter(tags=["tokens"])

Scope = Literal["read", "operate", "admin"]


class TokenOut(BaseModel):
    """A token as listings show it: never its secret. Times in ms since the epoch."""

    id: str
    name: str
    scope: Scope
    created_at: int
    last_used_at: int | None = Field(
        description="To the minute: a use is written at most so often."
    )
    revoked_at: int | None

    @classmethod
    def of(cls, token: Token) -> TokenOut:
        return cls.model_validate(token, from_attributes=True)


class Create(BaseModel):
    scope: Scope
    name: Text = Field(default="", max_length=200, description="Who or what it is for.")


class Created(TokenOut):
    token: str = Field(description="The token itself: shown this once, stored only as a hash.")


@router.get("/tokens", dependencies=[Depends(authorized(ADMIN))])
async def list_tokens(request: Request, limit: Limit = 50, cursor: Cursor = None) -> Page[TokenOut]:
    """Every token, newest first, revoked ones too."""
    services = services_of(request)
    rows = await services.database.call(
        services.tokens.tokens_page, before=pages.decode(cursor), limit=limit + 1
    )
    return pages.page(rows, limit, lambda t: (t.created_at, t.id), TokenOut.of)


@router.post("/tokens", status_code=201, dependencies=[Depends(authorized(ADMIN))])
async def create(request: Request, body: Create) -> Created:
    """Make a token; its text is in this answer and nowhere else, ever."""
    services = services_of(request)
    token, text = await services.database.call(
        services.tokens.create, body.scope, body.name, now=now_ms(services)
    )
    return Created(**TokenOut.of(token).model_dump(), token=text)


async def _revoke(request: Request, token_id: str) -> TokenOut:
    services = services_of(request)
    return TokenOut.of(
        await services.database.call(services.tokens.revoke, token_id, now=now_ms(services))
    )


@router.delete("/tokens/{token_id}", dependencies=[Depends(authorized(ADMIN))])
async def revoke(request: Request, token_id: str) -> TokenOut:
    """Revoke a token: refused from now on (its row stays, for the listing)."""
    return await _revoke(request, token_id)


@router.post("/tokens/{token_id}/revoke", dependencies=[Depends(authorized(ADMIN))])
async def revoke_by_post(request: Request, token_id: str) -> TokenOut:
    """The same as ``DELETE /tokens/{id}``, for clients (HTML forms) that only post."""
    return await _revoke(request, token_id)
