"""Who may call the admin API: a bearer token with enough scope (``runtime/tokens.py``)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request

from corral.runtime.services import Services
from corral.runtime.tokens import Token

READ: Final = "read"
OPERATE: Final = "operate"
ADMIN: Final = "admin"


class ApiError(Exception):
    """A refusal the API answers as ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def authorized(scope: str) -> Callable[[Request], Awaitable[Token]]:
    """A dependency: the request's token, if it allows ``scope``; else 401 (no token, or
    one that is malformed, unknown or revoked) or 403 (a token of a lesser scope)."""

    async def check(request: Request) -> Token:
        header = request.headers.get("authorization", "")
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            raise ApiError(
                401,
                "unauthorized",
                "send a token: 'Authorization: Bearer <token>' (corral tokens create)",
                {"www-authenticate": "Bearer"},
            )
        services = services_of(request)
        now = math.floor(time.time() * 1000)
        token = await services.database.call(services.tokens.verify, presented.strip(), now=now)
        if token is None:
            raise ApiError(
                401,
                "unauthorized",
                "the token is not valid: it is malformed, unknown or revoked",
                {"www-authenticate": "Bearer"},
            )
        if not token.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this needs a token of scope {scope!r} or above; this one is {token.scope!r}",
            )
        return token

    return check
