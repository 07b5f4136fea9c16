"""The dashboard over plain HTTP: every route behind a session, every page readable by
a browser without JavaScript, and bad input answered with a page that says why."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from starlette.routing import Mount, Route

from corral.server.dashboard import dashboard_routes
from corral.server.dashboard.chart import executions_chart
from corral.server.dashboard.web import value_type
from tests.server.browser import TIMEOUT_S, Dashboard, signed_in_client

#: Where a browser without a session may go: the sign-in pages and the stylesheet.
OPEN = {"/signin", "/signin/{code}", "/static"}


async def test_every_route_but_sign_in_needs_a_session(dashboard: Dashboard) -> None:
    """A route added later cannot be open by accident: each one is tried without a
    session, and with a token that is not one."""
    routes = [
        (method, route.path)
        for route in dashboard_routes()
        if isinstance(route, Route) and route.path not in OPEN
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    assert {getattr(route, "path", "") for route in dashboard_routes()} >= OPEN
    assert all(isinstance(route, Route | Mount) for route in dashboard_routes())
    assert len(routes) >= 19
    for cookies in [{}, {"corral_session": "corral_000000000000_" + "x" * 43}]:
        async with httpx.AsyncClient(
            base_url=dashboard.url, cookies=cookies, timeout=TIMEOUT_S
        ) as client:
            for method, template in routes:
                path = re.sub(r"\{(\w+)(:\w+)?\}", "1", template)
                response = await client.request(method, path, data={"csrf": "x"})
                assert response.status_code == 303, (method, path, response.text[:300])
                assert response.headers["location"].startswith("/signin?"), (method, path)
                if cookies:
                    assert "ended=1" in response.headers["location"]


async def test_every_page_reads_without_javascript(dashboard: Dashboard) -> None:
    instance = await dashboard.install_shop()
    dashboard.enqueue(instance, "say", "hello from the test")
    dashboard.enqueue(instance, "flaky", "x")
    await dashboard.runtime.idle()
    [dead] = dashboard.dead(instance)
    [execution] = [e["id"] for e in dashboard.runtime.executions(instance) if e["method"] == "say"]
    [webhook] = dashboard.runtime.services.webhooks.webhooks(instance)
    pages = {
        "/": ["1</strong> active", "1</strong> dead letter", "Executions per minute"],
        "/instances": [instance, "shops"],
        f"/instances/{instance}": ["stock:apples", "{&#34;$tuple&#34;: [1, 2]}", "shop opened"],
        f"/instances/{instance}/state/stock:pears": ["int", "3"],
        "/executions": ["say", "flaky", "activate"],
        "/executions?q=HELLO+FROM": ["say", "1 on this page"],
        f"/executions/{execution}": ["hello from the test", "&#34;said&#34;"],
        "/tasks?state=dead": ["flaky", "RuntimeError: flaky x fails its first run"],
        f"/tasks/{dead}": ["&#34;x&#34;", "Retry"],
        "/webhooks": [webhook.id, "order"],
        f"/webhooks/{webhook.id}": ["No delivery yet."],
        "/activities?priority=shops": ["Restock the pears"],
        "/logs": ["hello from the test", "shop opened"],
    }
    async with signed_in_client(dashboard, dashboard.operate_token) as client:
        for path, shown in pages.items():
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text[-1000:])
            assert response.headers["content-security-policy"].startswith("default-src 'self'")
            for text in shown:
                assert text in response.text, (path, text)
        searched = await client.get("/executions?q=nothing+says+this")
        assert "No execution matches these filters." in searched.text
        # What an action did is shown from a cookie it set, never from the URL.
        spoofed = await client.get("/?notice=Your+token+expired:+sign+in+at+evil.example")
        assert "evil.example" not in spoofed.text


async def test_bad_input_is_a_page_saying_what_is_wrong(dashboard: Dashboard) -> None:
    async with signed_in_client(dashboard, dashboard.read_token) as client:
        for path, status, message in [
            ("/executions?outcome=fine", 400, "outcome is one of ok, error"),
            ("/executions?since=yesterday", 400, "since must be a date and time"),
            ("/executions?cursor=bm90LWEtY3Vyc29y", 400, "not one of this list"),
            ("/executions?limit=1000", 400, "limit must be from 1 to 100"),
            ("/executions/nope", 404, "there is no execution"),
            ("/instances/nope", 404, "there is no instance"),
            ("/tasks/12x", 404, "task ids are numbers"),
            ("/tasks/99999", 404, "there is no task 99999"),
        ]:
            response = await client.get(path)
            assert response.status_code == status, (path, response.text[-500:])
            assert message in response.text.replace("&#39;", "'"), (path, response.text[-800:])


def test_the_chart_stacks_each_minute_by_outcome() -> None:
    now = int(datetime(2026, 1, 31, 14, 5, 30, tzinfo=UTC).timestamp() * 1000)
    minute = now // 60_000
    chart = executions_chart(
        [
            (minute, "ok", 3),
            (minute, "error", 1),
            (minute - 2, "timeout", 2),
            (minute - 90, "ok", 5),
        ],
        now_ms=now,
        minutes=60,
    )
    assert len(chart.bars) == 60
    last = chart.bars[-1]
    assert [s.group for s in last.segments] == ["ok", "error"]
    assert last.title == "14:05 UTC: 1 error, 3 ok"
    assert chart.bars[-3].segments[0].group == "limit"
    assert (chart.totals["ok"], chart.totals["error"], chart.totals["timeout"]) == (3, 1, 2)
    # The tallest bar (4) reaches the top of a scale rounded up to 5.
    assert [tick.label for tick in chart.y_ticks] == ["0", "5"]
    assert chart.x_ticks[-1].label == "now"


def test_a_value_is_named_by_its_type() -> None:
    assert [
        value_type(v)
        for v in [
            {"$tuple": [1]},
            {"$datetime": "2026-01-31T14:05:00", "zone": "Europe/Paris"},
            {"$dict": {"$a": 1}},
            {"a": 1},
            [1],
            "s",
            1,
            1.5,
            True,
            None,
        ]
    ] == ["tuple", "datetime", "dict", "dict", "list", "str", "int", "float", "bool", "None"]
