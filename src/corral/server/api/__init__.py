"""The admin API, ``/api/v1`` (SPEC §2): JSON over the one wiring, behind tokens.

Every route takes ``Authorization: Bearer <token>`` (``corral tokens create``) and
needs a scope: ``read`` for GET, ``operate`` for what changes work (retry, cancel,
replay, install, uninstall, deploy), ``admin`` for tokens. The OpenAPI schema is a
route like the others (``/api/v1/openapi.json``, scope ``read``). A request without
a valid token is answered 401 before anything else (``auth.RequireToken``, which
``create_app`` puts around every path under ``/api/v1``); a route that names no scope
is refused at startup. docs/api.md is the reference.

Lists are newest first, paginated in SQL with an opaque cursor (``pages.py``):
``{"data": [...], "next_cursor": ... or null}``. Every refusal is
``{"error": {"code", "message"}}`` with a 4xx; a 5xx is a bug (or 503: the
database is unreachable, nothing was changed).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral import __version__
from corral.errors import BodyTooLarge, CorralError, DatabaseUnavailable, NotFound
from corral.runtime.services import Services
from corral.server.api import (
    activities,
    agents,
    executions,
    instances,
    logs,
    state,
    tasks,
    tokens,
    webhooks,
)
from corral.server.api.agents import Deploys, ZygoteOf
from corral.server.api.auth import READ, SCOPE_ATTRIBUTE, ApiError, authorized
from corral.server.api.streams import Streams
from corral.server.body import too_large

log = logging.getLogger("corral.api")

_TOKENS = (
    "A token from `corral tokens create --scope read|operate|admin`: read for GET, "
    "operate for what changes work, admin for tokens."
)

#: The resources' routers, each a module with ``router``.
RESOURCES = (agents, instances, state, executions, tasks, logs, activities, webhooks, tokens)


def create_api(services: Services, *, zygote_of: ZygoteOf, streams: Streams) -> FastAPI:
    """The admin API app; ``create_app`` mounts it at ``/api/v1``. ``zygote_of``: the
    zygote a deploy's code is described in (the server's sandboxes'); ``streams``: the
    server's live streams (``HttpServer`` ends them as it stops)."""
    api = FastAPI(
        title="Corral admin API",
        version=__version__,
        openapi_url=None,  # served below, behind a token like every route
        docs_url=None,
        redoc_url=None,
    )
    api.state.services = services
    api.state.zygote_of = zygote_of
    api.state.streams = streams
    api.state.deploys = Deploys()
    for resource in RESOURCES:
        # The app's own routes, not an included router: ``api.routes`` lists every one
        # (``_check_scopes`` and the tests read them there, whatever FastAPI's version).
        api.router.routes.extend(resource.router.routes)

    @api.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorized(READ))])
    async def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                routes=api.routes,
                servers=[{"url": "/api/v1"}],
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "token": {"type": "http", "scheme": "bearer", "description": _TOKENS}
            }
            schema["security"] = [{"token": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    _check_scopes(api)
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(NotFound, _not_found)
    api.add_exception_handler(DatabaseUnavailable, _unavailable)
    api.add_exception_handler(CorralError, _refused)
    api.add_exception_handler(ValueError, _refused)
    return api


def _check_scopes(api: FastAPI) -> None:
    """Refuse to make an app with a route that names no scope (``authorized``): any
    valid token would do for it."""
    for route in api.routes:
        if not isinstance(route, APIRoute):
            continue
        scopes = [
            getattr(dependency.call, SCOPE_ATTRIBUTE, None)
            for dependency in route.dependant.dependencies
        ]
        if not any(scopes):
            raise RuntimeError(f"route {route.path} names no scope: add authorized(...)")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI's 400 around our bound
        return _error(413, "too_large", too_large())
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    message = "no such resource" if exc.status_code == 404 else str(exc.detail)
    return _error(exc.status_code, code, message, dict(exc.headers or {}))


async def _invalid(request: Request, exc: Exception) -> Response:
    """A malformed parameter or body: each problem named by where it is."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()[:10]
    )
    return _error(422, "invalid_request", problems or "the request is malformed")


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, "not_found", str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _error(
        503,
        "unavailable",
        "the server cannot reach its database; nothing was changed, try again later",
        {"retry-after": "5"},
    )


async def _refused(request: Request, exc: Exception) -> Response:
    """What the runtime refuses (a malformed name, a limit, a state that forbids it)."""
    return _error(400, "bad_request", str(exc))
