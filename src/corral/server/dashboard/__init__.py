"""The dashboard at ``/`` (SPEC §2): server-rendered pages over the one database.

Jinja2 templates (``templates/``) and a stylesheet and one small script
(``static/``), shipped in the package: no front-end build, nothing fetched from
elsewhere. Every page reads without JavaScript; the script only makes the log
tail live (Server-Sent Events, with a pause) and asks before a bulk action.

Pages: the overview (``/``), instances and an instance with its state browser,
executions (filters, search, pages without a cap) and one execution (with
re-run), tasks and dead letters (retry, cancel, bulk), webhooks and their
deliveries (replay), activities by priority, and the live log tail. Signing in
and CSRF: :mod:`corral.server.dashboard.sessions`. docs/dashboard.md is the
operator's guide.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from corral.server.dashboard import (
    activities,
    executions,
    instances,
    logs,
    overview,
    signin,
    tasks,
    webhooks,
)
from corral.server.dashboard.sessions import SignInCodes

STATIC = Path(__file__).with_name("static")

__all__ = ["SignInCodes", "dashboard_routes"]


def dashboard_routes(codes: SignInCodes | None = None) -> list[BaseRoute]:
    """The dashboard's routes, for ``create_app`` to serve beside ``/hooks`` and the API.
    ``codes``: the one-time sign-in codes this process holds (``corral dev``), if any."""
    get, post = ["GET"], ["POST"]
    return [
        Route("/", overview.overview, methods=get),
        Route("/instances", instances.instances, methods=get),
        Route("/instances/{instance}", instances.instance, methods=get),
        Route("/instances/{instance}/state/{key:path}", instances.state_value, methods=get),
        Route("/executions", executions.executions, methods=get),
        Route("/executions/{execution}", executions.execution, methods=get),
        Route("/executions/{execution}/rerun", executions.rerun, methods=post),
        Route("/tasks", tasks.tasks, methods=get),
        Route("/tasks/bulk", tasks.bulk, methods=post),
        Route("/tasks/{task}", tasks.task, methods=get),
        Route("/tasks/{task}/retry", tasks.retry, methods=post),
        Route("/tasks/{task}/cancel", tasks.cancel, methods=post),
        Route("/webhooks", webhooks.webhooks, methods=get),
        Route("/webhooks/{webhook}", webhooks.webhook, methods=get),
        Route("/deliveries/{delivery}/replay", webhooks.replay, methods=post),
        Route("/activities", activities.activities, methods=get),
        Route("/activities/{activity}", activities.activity, methods=get),
        Route("/logs", logs.logs, methods=get),
        Route("/logs/stream", logs.logs_stream, methods=get),
        Route("/signin", signin.signin_page, methods=get),
        Route("/signin", signin.signin, methods=post),
        Route("/signin/{code}", signin.one_time(codes), methods=get),
        Route("/signout", signin.signout, methods=post),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
