"""The HTTP face of Corral: an ASGI app (Starlette) over the one wiring, ``Services``.

``/hooks/{token}`` takes webhook deliveries (:mod:`corral.server.hooks`),
``/api/v1`` is the admin API (:mod:`corral.server.api`, behind tokens), ``/`` the
dashboard (:mod:`corral.server.dashboard`, signed in with a token) and
``/healthz`` says whether this server can reach its database. Sync webhooks run
their handler inside the request, so a server has a sandbox pool of its own and
an executor over it (``server_executor``): ``corral serve`` starts one before it
listens; ``corral dev`` lends the worker's beside it.

The app keeps nothing between requests that the database does not: run as many
servers as you like on one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from corral.errors import DatabaseUnavailable
from corral.runtime.executor import Executor
from corral.runtime.records import ExecutionRecord
from corral.runtime.services import Services
from corral.sandbox.pool import SandboxPool
from corral.sandbox.zygote import Zygote
from corral.server.api import create_api
from corral.server.api.auth import RequireToken
from corral.server.api.streams import Streams
from corral.server.dashboard import SignInCodes, dashboard_routes
from corral.server.hooks import Intake
from corral.server.responses import error_answer, json_answer

log = logging.getLogger("corral.server")

#: How often idle sandboxes of the server's pool are retired (the worker's housekeeping
#: does the same for its own).
RETIRE_EVERY_S = 5.0
#: Where the admin API is served.
API_PREFIX = "/api/v1"
#: Seconds a sender is asked to wait when the database cannot take its delivery.
UNAVAILABLE_RETRY_S = 5


@contextlib.asynccontextmanager
async def server_executor(services: Services, *, insecure: bool = False) -> AsyncIterator[Executor]:
    """An executor over a sandbox pool of the server's own, for sync webhooks; its
    sandboxes, and the zygote they fork from, closed on the way out.

    ``SandboxUnavailable`` where this machine cannot sandbox and ``insecure`` is not set.
    """
    zygote = await Zygote.start(insecure=insecure)
    pool = SandboxPool(zygote)
    retiring = asyncio.create_task(_retire_idle(pool))
    try:
        yield Executor(services, pool)
    finally:
        retiring.cancel()
        await asyncio.gather(retiring, return_exceptions=True)
        await pool.close()
        await zygote.close()


async def _retire_idle(pool: SandboxPool) -> None:
    while True:
        await asyncio.sleep(RETIRE_EVERY_S)
        await pool.retire_idle()


def create_app(
    services: Services,
    *,
    executor: Executor | None = None,
    insecure: bool = False,
    on_accept: Callable[[], None] | None = None,
    on_record: Callable[[ExecutionRecord], None] | None = None,
    sign_in: SignInCodes | None = None,
) -> Starlette:
    """The app. Without an ``executor``, its lifespan starts one (``server_executor``)
    and closes it at shutdown; one given stays its owner's to close.

    ``on_accept``: called after each async delivery is queued (``corral dev`` wakes
    its worker with it; other workers learn of it from the database). ``on_record``:
    given each sync webhook's execution record once written (``corral dev`` prints it).
    ``sign_in``: the one-time dashboard sign-in codes this process holds (``corral dev``).

    The app's ``state.streams`` are its live streams (``/api/v1/logs/stream`` and the
    dashboard's log tail): whoever serves it ends them as the server stops
    (``HttpServer(on_stop=...)``).
    """
    running: list[Executor] = [executor] if executor is not None else []

    def current() -> Executor:
        return running[0]

    intake = Intake(services, current, on_accept=on_accept, on_record=on_record)
    streams = Streams()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if running:
            yield
            return
        async with server_executor(services, insecure=insecure) as started:
            running.append(started)
            try:
                yield
            finally:
                running.clear()

    async def healthz(request: Request) -> Response:
        await services.database.call(services.database.probe)
        return json_answer(200, {"ok": True}).response()

    app = Starlette(
        routes=[
            Route("/hooks/{token:path}", intake),  # any path under it: 404 unless a token
            Route("/healthz", healthz, methods=["GET"]),
            Mount(
                API_PREFIX,
                create_api(services, zygote_of=lambda: current().pool.zygote, streams=streams),
            ),
            *dashboard_routes(sign_in),
        ],
        # Every path under /api/v1 needs a token, whether a route matches it or not.
        middleware=[Middleware(RequireToken, services=services, prefix=API_PREFIX)],
        exception_handlers={
            HTTPException: _http_error,
            DatabaseUnavailable: _database_unavailable,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.streams = streams
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method a route does not take), as JSON."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    message = "no such resource" if exc.status_code == 404 else str(exc.detail)
    return error_answer(
        exc.status_code, code, message, headers=list((exc.headers or {}).items())
    ).response()


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    """Nothing was taken: the sender is asked to come back once the database is."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_answer(
        503,
        "unavailable",
        "the server cannot reach its database; nothing was stored, try again later",
        headers=[("retry-after", str(UNAVAILABLE_RETRY_S))],
    ).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Corral failed (a bug): a generic 500; the traceback goes to the server's log."""
    return error_answer(
        500,
        "internal_error",
        "Corral failed to handle this request; its operator can see why in the server's log",
    ).response()
