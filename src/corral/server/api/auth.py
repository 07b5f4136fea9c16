"""Who may call the admin API: a bearer token with enough scope (``runtime/tokens.py``).

Two checks, so that no route can be open by accident. ``RequireToken``, around the
server's app for every path under ``/api/v1``, answers 401 to any request without a
valid token before anything else reads it: its path (a route or none), its
parameters, its body. Each route
then names the scope it needs with ``authorized(scope)`` (403 for a lesser token),
and ``create_api`` refuses to start with a route that names none.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.errors import ApiError, DatabaseUnavailable
from corral.runtime.services import Services
from corral.runtime.tokens import Token

__all__ = [
    "ADMIN",
    "OPERATE",
    "READ",
    "SCOPE_ATTRIBUTE",
    "ApiError",
    "RequireToken",
    "authorized",
    "now_ms",
    "services_of",
]

READ: Final = "read"
OPERATE: Final = "operate"
ADMIN: Final = "admin"


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def now_ms(services: Services) -> int:
    """Now, in ms since the epoch, by the services' clock (the one the runtime keeps)."""
    return math.floor(services.clock() * 1000)


def _check_text(request: Request) -> None:
    """400 for a query or path parameter no database column can hold: one with a NUL
    character (PostgreSQL's text has none) or a lone surrogate (no UTF-8). Checked
    with the scope, for every route: no route can forget it."""
    pairs_of: list[tuple[str, list[tuple[str, str]]]] = [
        ("query parameter", request.query_params.multi_items()),
        ("path parameter", [(k, str(v)) for k, v in request.path_params.items()]),
    ]
    for where, pairs in pairs_of:
        for name, value in pairs:
            if "\x00" in value:
                raise ApiError(
                    400, "invalid_request", f"{where} {name!r:.60} contains a NUL character"
                )
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ApiError(
                    400, "invalid_request", f"{where} {name!r:.60} is not valid Unicode text"
                ) from None


#: Where ``RequireToken`` leaves the request's token for ``authorized``.
_TOKEN = "corral_token"
#: What ``authorized`` marks its checks with: ``create_api`` looks for it on every route.
SCOPE_ATTRIBUTE = "corral_scope"


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "unauthorized", "message": message}},
        status_code=401,
        headers={"www-authenticate": "Bearer"},
    )


class RequireToken:
    """ASGI middleware of the server's app, for the paths under ``prefixes`` (the admin
    API, ``/metrics``): a request without a valid token is answered 401 here, whatever
    it asks for (a route, no route, a path no route could match, any method, any
    body); one with a valid token goes on, the token in its scope's state for
    ``authorized``."""

    def __init__(self, app: ASGIApp, services: Services, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.services = services
        self.prefixes = tuple(prefix.rstrip("/") for prefix in prefixes)

    def _guards(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else None
        if path is None or not self._guards(path):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        kind, _, presented = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            answer = _unauthorized(
                "send a token: 'Authorization: Bearer <token>' (corral tokens create)"
            )
            await answer(scope, receive, send)
            return
        try:
            token = await self.services.database.call(
                self.services.tokens.verify, presented.strip(), now=now_ms(self.services)
            )
        except DatabaseUnavailable:
            await JSONResponse(
                {
                    "error": {
                        "code": "unavailable",
                        "message": "the server cannot reach its database; try again later",
                    }
                },
                status_code=503,
                headers={"retry-after": "5"},
            )(scope, receive, send)
            return
        if token is None:
            answer = _unauthorized("the token is not valid: it is malformed, unknown or revoked")
            await answer(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state[_TOKEN] = token
        await self.app(scope, receive, send)


def authorized(scope: str) -> Callable[[Request], Awaitable[Token]]:
    """A dependency: the request's token (checked by ``RequireToken``), if it allows
    ``scope``; else 403 (a token of a lesser scope). Then its parameters are checked
    for text no column can hold (400)."""

    async def check(request: Request) -> Token:
        token: Token | None = getattr(request.state, _TOKEN, None)
        if token is None:  # served without RequireToken: refuse rather than serve
            raise ApiError(
                401, "unauthorized", "no token was checked", {"www-authenticate": "Bearer"}
            )
        if not token.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"this needs a token of scope {scope!r} or above; this one is {token.scope!r}",
            )
        _check_text(request)
        return token

    setattr(check, SCOPE_ATTRIBUTE, scope)
    return check
