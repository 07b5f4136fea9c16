"""Every dashboard page over plain HTTP, as a browser without JavaScript reads it."""

from __future__ import annotations

from tests.server.browser import Dashboard, signed_in_client


async def test_every_page_reads_without_javascript(dashboard: Dashboard) -> None:
    instance = await dashboard.install_shop()
    dashboard.enqueue(instance, "say", "hello from the test")
    dashboard.enqueue(instance, "flaky", "x")
    await dashboard.runtime.idle()
    async with signed_in_client(dashboard, dashboard.operate_token) as client:
        for path in [
            "/",
            "/instances",
            f"/instances/{instance}",
            "/executions",
            "/tasks",
            "/tasks?state=dead",
            "/webhooks",
            "/activities",
            "/logs",
        ]:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text[-2000:])
            print(path, len(response.text))
