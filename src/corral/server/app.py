"""The HTTP face of Corral: an ASGI app (Starlette) over the one wiring, ``Services``.

``/hooks/{token}`` takes webhook deliveries (:mod:`corral.server.hooks`),
``/api/v1`` is the admin API (:mod:`corral.server.api`, behind tokens), ``/`` the
dashboard (:mod:`corral.server.dashboard`, signed in with a token), ``/metrics`` the
fleet's metrics (:mod:`corral.server.metrics`, behind a ``read`` token) and
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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

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
from corral.server import metrics
from corral.server.api import create_api
from corral.server.api.auth import RequireToken
from corral.server.api.streams import Streams
from corral.server.body import BodyLimit
from corral.server.dashboard import SignInCodes, dashboard_routes
from corral.server.hooks import Intake
from corral.server.responses import error_answer, json_answer
from corral.server.serving import HttpServer, Listener

log = logging.getLogger("corral.server")

#: How often idle sandboxes of the server's pool are retired (the worker's housekeeping
#: does the same for its own).
RETIRE_EVERY_S = 5.0
#: Where the admin API is served.
API_PREFIX = "/api/v1"
METRICS_PATH = "/metrics"
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
        async with _snapshots_kept(services):
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
            Route(METRICS_PATH, metrics.token_endpoint(services), methods=["GET"]),
            Mount(
                API_PREFIX,
                create_api(services, zygote_of=lambda: current().pool.zygote, streams=streams),
            ),
            *dashboard_routes(sign_in),
        ],
        # Every path under /api/v1 (and /metrics) needs a token, whether a route
        # matches it or not.
        middleware=[
            Middleware(RequireToken, services=services, prefixes=(API_PREFIX, METRICS_PATH)),
            Middleware(BodyLimit),
        ],
        exception_handlers=_HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services  # how a token is checked (``api.auth``)
    app.state.streams = streams
    return app


def create_metrics_app(services: Services) -> Starlette:
    """``/metrics`` alone, without a token, for a port of its own (``--metrics-port``).
    It writes no snapshot: the worker or server beside it does."""
    return Starlette(
        routes=[Route("/metrics", metrics.open_endpoint(services), methods=["GET"])],
        exception_handlers=_HANDLERS,
    )


#: Seconds a scrape in flight may take to finish once a metrics port is stopped.
METRICS_GRACE_S = 2.0


@contextlib.asynccontextmanager
async def metrics_served(
    services: Services, listener: Listener, *, on_ready: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """``create_metrics_app`` served on ``listener`` while the block runs (``corral serve``
    and ``corral worker`` with ``--metrics-port``); its owner handles the signals."""
    http = HttpServer(
        create_metrics_app(services),
        listener,
        own_signals=False,
        grace_s=METRICS_GRACE_S,
        on_ready=on_ready,
    )
    serving = asyncio.create_task(http.run_until_stopped())
    try:
        yield
    finally:
        http.stop()
        await asyncio.gather(serving, return_exceptions=True)


@contextlib.asynccontextmanager
async def _snapshots_kept(services: Services) -> AsyncIterator[None]:
    """This process's metrics written every few seconds while the app runs, and once
    more as it stops."""
    keeping = asyncio.create_task(services.metric_snapshots.keep())
    try:
        yield
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await services.metric_snapshots.save()


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


_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: _http_error,
    DatabaseUnavailable: _database_unavailable,
    Exception: _internal_error,
}
