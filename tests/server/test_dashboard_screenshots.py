"""``make screenshots``: a picture of each dashboard page after a real run, saved under
docs/screenshots/ (``CORRAL_SCREENSHOTS`` to put them elsewhere).

Not part of ``make test`` (marked ``screenshots``): it asserts only that each page
rendered what the run made, and its pictures are for people. The run spreads over
the last forty minutes (the worker's clock starts in the past and is moved a minute
at a time), so the overview's chart has something to show.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.server.browser import Dashboard, OpenPage, sign_in
from tests.support import FakeClock

pytestmark = pytest.mark.screenshots

OUT = Path(os.environ.get("CORRAL_SCREENSHOTS", Path(__file__).parents[2] / "docs" / "screenshots"))
MINUTES = 40
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def clock() -> FakeClock:
    """The worker's clock starts ``MINUTES`` ago; the run moves it to now."""
    return FakeClock(start_ms=int(time.time() * 1000) - MINUTES * 60_000)


async def _run(dashboard: Dashboard) -> tuple[str, str]:
    """A shop and a second one at work for ``MINUTES`` minutes: orders posted to their
    webhooks, tasks, failures (dead letters), one task retried."""
    shop = await dashboard.install_shop()
    other = await dashboard.install_shop("market")
    runtime = dashboard.runtime
    hook = await runtime.store(shop).get("webhook")
    async with httpx.AsyncClient(timeout=60) as client:
        for minute in range(MINUTES):
            for n in range(1 + minute % 5):
                dashboard.enqueue(shop, "say", f"minute {minute}: checked stock {n}")
            if minute % 7 == 3:
                dashboard.enqueue(other, "flaky", f"batch-{minute}")
            if minute % 4 == 0:
                response = await client.post(
                    hook, json={"order": minute, "items": ["apples"] * (minute % 3 + 1)},
                    headers={"webhook-id": f"order-{minute}"},
                )  # fmt: skip
                assert response.status_code == 202
            await runtime.idle()
            runtime.clock.advance(60_000)
    for n in range(3):
        dashboard.enqueue(shop, "later", n, in_s=3600)
    return shop, other


@pytest.fixture
def out() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


async def _shot(page: Page, name: str, *, full: bool = True) -> None:
    await page.screenshot(path=OUT / f"{name}.png", full_page=full)


async def test_screenshots_of_every_page(
    dashboard: Dashboard,
    open_page: OpenPage,
    db_url: str,
    out: Path,
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one set of pictures is enough: taken on SQLite")
    shop, _ = await _run(dashboard)
    page = await open_page(viewport=WIDE, color_scheme="light")
    await sign_in(page, dashboard, dashboard.operate_token)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await _shot(page, "overview")

    await page.goto(f"{dashboard.url}/executions?limit=15")
    await expect(page.locator("table.executions tbody tr").first).to_be_visible()
    await _shot(page, "executions")

    await page.goto(f"{dashboard.url}/executions?outcome=error")
    await page.locator("table.executions tbody tr a").first.click()
    await expect(page.get_by_role("heading", name="Error", exact=True)).to_be_visible()
    await _shot(page, "execution")

    await page.goto(f"{dashboard.url}/instances/{shop}")
    await expect(page.locator("table.state")).to_be_visible()
    await _shot(page, "instance")
    await page.locator("#state").screenshot(path=out / "state-browser.png")

    await page.goto(f"{dashboard.url}/tasks?state=dead")
    await expect(page.locator("table.tasks tbody tr").first).to_be_visible()
    await _shot(page, "dead-letters")

    webhook = (await dashboard.runtime.services.database.call(
        dashboard.runtime.services.webhooks.webhooks_page, shop, limit=1
    ))[0]  # fmt: skip
    await page.goto(f"{dashboard.url}/webhooks/{webhook.id}")
    await expect(page.locator("table.deliveries tbody tr").first).to_be_visible()
    await _shot(page, "webhook-deliveries")

    await page.goto(f"{dashboard.url}/activities?priority=shops")
    await expect(page.get_by_role("link", name="Restock the pears")).to_be_visible()
    await _shot(page, "activities")

    await page.goto(f"{dashboard.url}/logs")
    await expect(page.locator(".live-state")).to_have_text("live")
    await _shot(page, "logs", full=False)

    dark = await open_page(viewport=WIDE, color_scheme="dark")
    await sign_in(dark, dashboard, dashboard.operate_token)
    await _shot(dark, "overview-dark")

    phone = await open_page(viewport=PHONE, color_scheme="light", is_mobile=True)
    await sign_in(phone, dashboard, dashboard.operate_token)
    await _shot(phone, "overview-phone")
    await phone.goto(f"{dashboard.url}/instances/{shop}")
    await _shot(phone, "instance-phone", full=False)
