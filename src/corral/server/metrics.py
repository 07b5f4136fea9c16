"""``/metrics``: the whole fleet's metrics in the Prometheus text format (docs/metrics.md).

Any process that serves it answers with the same sums (``corral.runtime.metrics``),
so one scrape target is enough, wherever it runs. Two ways to serve it:

- on the main server, behind a bearer token of scope ``read``, as the admin API is:
  that port takes webhooks and is usually reachable from far more places than a
  Prometheus server, and the metrics name agents and their traffic;
- on a port of its own (``corral serve --metrics-port``, ``corral worker
  --metrics-port``), without a token, on 127.0.0.1 unless told otherwise: for a
  scraper that reaches it over a private network or a sidecar, as node exporters
  are commonly run. Whoever binds it elsewhere keeps it from the internet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from corral.runtime.metrics import CONTENT_TYPE
from corral.runtime.services import Services
from corral.server.api.auth import READ, ApiError, authorized
from corral.server.responses import error_answer

Endpoint = Callable[[Request], Awaitable[Response]]


async def scrape(services: Services) -> Response:
    """The exposition, read from the database now (``DatabaseUnavailable``: 503)."""
    body = await services.database.call(services.metric_snapshots.scrape)
    return Response(body, media_type=CONTENT_TYPE)


def open_endpoint(services: Services) -> Endpoint:
    """``/metrics`` for a port of its own: no token."""

    async def metrics(request: Request) -> Response:
        return await scrape(services)

    return metrics


def token_endpoint(services: Services) -> Endpoint:
    """``/metrics`` on the main server: a token of scope ``read``, or 401/403 in the
    admin API's error shape."""
    check = authorized(READ)

    async def metrics(request: Request) -> Response:
        try:
            await check(request)
        except ApiError as exc:
            headers = list((exc.headers or {}).items())
            return error_answer(exc.status, exc.code, exc.message, headers=headers).response()
        return await scrape(services)

    return metrics
