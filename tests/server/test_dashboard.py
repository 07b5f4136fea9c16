"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a
server on a free port with a real worker running the shop agent in real sandboxes,
on SQLite and PostgreSQL.

An operator signs in, finds a run's executions, opens one, follows it to its
instance and browses its state; retries a dead letter and sees it run; cancels
tasks in bulk after being told how many; watches the live tail receive a line,
and pauses it; replays a webhook delivery and re-runs an execution. A form
without its CSRF token, or an action a read token may not take, is refused with
a page that says so.
"""

from __future__ import annotations

import html
import re

import httpx
from playwright.async_api import expect

from tests.server.browser import TIMEOUT_S, Dashboard, OpenPage, sign_in


async def test_sign_in_then_follow_an_execution_to_its_instance_and_its_state(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    instance = await dashboard.install_shop()
    dashboard.enqueue(instance, "say", "hello from the test")
    await dashboard.runtime.idle()
    page = await open_page()

    await page.goto(dashboard.url + "/executions")
    await expect(page.get_by_role("heading", name="Sign in to Corral")).to_be_visible()
    await page.get_by_label("Token").fill("corral_000000000000_not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("That token is not valid")
    await page.get_by_label("Token").fill(dashboard.operate_token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(dashboard.url + "/executions")  # back where it was going
    await expect(page.locator("header")).to_contain_text("ops on call")

    executions = page.locator("table.executions tbody tr")
    await expect(executions).to_have_count(2)
    await expect(executions.filter(has_text="activate")).to_contain_text("lifecycle")
    await executions.get_by_role("link", name="say", exact=True).click()

    await expect(page.get_by_role("heading", name="say ok")).to_be_visible()
    await expect(page.locator("ol.log")).to_contain_text("hello from the test")
    await expect(page.locator("pre")).to_contain_text('"said": "hello from the test"')
    await page.get_by_role("link", name=instance).first.click()

    await page.wait_for_url(re.compile(rf"/instances/{instance}$"))
    state = page.locator("table.state tbody tr")
    point = state.filter(has=page.get_by_role("link", name="point", exact=True))
    await expect(point).to_contain_text("tuple")
    await expect(point).to_contain_text('{"$tuple": [1, 2]}')
    opened = state.filter(has=page.get_by_role("link", name="opened", exact=True))
    await expect(opened).to_contain_text("datetime")
    session = state.filter(has=page.get_by_role("link", name="session", exact=True))
    await expect(session.locator("td").nth(4)).to_have_text("1 h")  # the worker's clock stood still
    greeting = state.filter(has=page.get_by_role("link", name="greeting", exact=True))
    await expect(greeting.locator("td").nth(4)).to_have_text("none")

    await page.get_by_label("Keys starting with").fill("stock:")
    await page.get_by_role("button", name="Browse").click()
    await expect(state).to_have_count(2)
    await expect(state.nth(0)).to_contain_text("stock:apples")
    await expect(state.nth(1)).to_contain_text("stock:pears")
    await state.nth(0).get_by_role("link", name="stock:apples").click()
    await expect(page.locator("dl.facts")).to_contain_text("int")
    await expect(page.locator("pre").first).to_have_text("12")


async def test_a_dead_letter_is_retried_and_runs(dashboard: Dashboard, open_page: OpenPage) -> None:
    instance = await dashboard.install_shop()
    dashboard.enqueue(instance, "flaky", "x")
    await dashboard.runtime.idle()
    dashboard.runtime.clock.advance(1000)  # the retried run starts later: listed first
    [dead] = dashboard.dead(instance)
    page = await open_page()
    await sign_in(page, dashboard, dashboard.operate_token)

    await page.get_by_role("link", name="1 dead letter", exact=True).click()
    letters = page.locator("table.tasks tbody tr")
    await expect(letters).to_have_count(1)
    await expect(letters).to_contain_text("RuntimeError: flaky x fails its first run")
    await letters.get_by_role("button", name="Retry", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(
        f"Task {dead} (flaky) is queued to run again."
    )
    await expect(letters).to_have_count(0)

    await dashboard.runtime.idle()  # the worker runs it again
    assert dashboard.dead(instance) == []
    await page.goto(f"{dashboard.url}/executions?instance={instance}&method=flaky")
    runs = page.locator("table.executions tbody tr")
    await expect(runs).to_have_count(2)
    await expect(runs.nth(0).locator(".badge")).to_have_text("ok")
    await expect(runs.nth(1).locator(".badge")).to_have_text("error")
    await runs.nth(0).get_by_role("link", name="flaky").click()
    await expect(page.locator("ol.log")).to_contain_text("flaky x ran")


async def test_bulk_cancel_says_how_many_before_it_cancels(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    shop = await dashboard.install_shop()
    market = await dashboard.install_shop("market")
    for n in range(3):
        dashboard.enqueue(shop, "later", n, in_s=3600)
    dashboard.enqueue(market, "later", 9, in_s=3600)
    page = await open_page()
    await sign_in(
        page, dashboard, dashboard.operate_token, f"/tasks?state=scheduled&instance={shop}"
    )
    await expect(page.locator("table.tasks tbody tr")).to_have_count(3)

    await page.get_by_role("button", name="Cancel all…").click()
    await expect(page.get_by_role("heading", name="Cancel 3 tasks?")).to_be_visible()
    assert len(dashboard.runtime.tasks(shop)) == 3  # asking changed nothing
    await page.get_by_role("button", name="Yes, cancel 3").click()

    await expect(page.get_by_role("status")).to_have_text("Cancelled: 3 tasks.")
    await expect(page.locator("table.tasks tbody tr")).to_have_count(0)
    assert dashboard.runtime.tasks(shop) == []
    assert [task.method for task in dashboard.runtime.tasks(market)] == ["later"]


async def test_the_live_tail_receives_lines_and_pauses(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    instance = await dashboard.install_shop()
    page = await open_page()
    await sign_in(page, dashboard, dashboard.operate_token, f"/logs?instance={instance}")
    tail = page.locator("ol.log")
    await expect(tail).to_contain_text("shop opened")  # written before the page was
    await expect(page.locator(".live-state")).to_have_text("live")

    dashboard.enqueue(instance, "say", "a line written while the page is open")
    await dashboard.runtime.idle()
    await expect(tail).to_contain_text("a line written while the page is open")

    await page.get_by_role("button", name="Pause").click()
    await expect(page.locator(".live-state")).to_have_text("paused")
    dashboard.enqueue(instance, "say", "a line written while paused")
    await dashboard.runtime.idle()
    assert "a line written while paused" in dashboard.runtime.logs(instance)
    await expect(tail.get_by_text("a line written while paused")).to_have_count(0)
    await page.get_by_role("button", name="Resume").click()
    await expect(tail).to_contain_text("a line written while paused")
    await expect(tail.get_by_text("a line written while the page is open")).to_have_count(1)


async def test_a_form_without_its_csrf_token_is_refused(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    instance = await dashboard.install_shop()
    dashboard.enqueue(instance, "flaky", "x")
    await dashboard.runtime.idle()
    [dead] = dashboard.dead(instance)
    page = await open_page()
    await sign_in(page, dashboard, dashboard.operate_token, "/tasks?state=dead")

    # The page's own form, its CSRF field taken out: what another site's form would send.
    await page.locator("form[action$='/retry'] input[name=csrf]").evaluate("i => i.remove()")
    await page.get_by_role("button", name="Retry", exact=True).click()
    await expect(page.get_by_role("heading", name=re.compile("Form refused"))).to_be_visible()
    await expect(page.locator("main")).to_contain_text("nothing was done")
    for csrf in [None, "", "0" * 64]:
        form = {"back": "/"} if csrf is None else {"back": "/", "csrf": csrf}
        response = await page.request.post(f"{dashboard.url}/tasks/{dead}/retry", form=form)
        assert response.status == 403
    assert dashboard.dead(instance) == [dead]


async def test_a_read_token_sees_dead_letters_but_cannot_retry_them(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    instance = await dashboard.install_shop()
    dashboard.enqueue(instance, "flaky", "x")
    await dashboard.runtime.idle()
    [dead] = dashboard.dead(instance)
    page = await open_page()
    await sign_in(page, dashboard, dashboard.read_token, "/tasks?state=dead")
    await expect(page.locator("header .scope")).to_have_text("read")
    await expect(page.locator("table.tasks tbody tr")).to_contain_text("flaky")
    await expect(page.get_by_role("button", name="Retry", exact=True)).to_have_count(0)

    # A retry posted anyway, with this session's valid CSRF token (the sign-out form's).
    csrf = await page.locator("form.who input[name=csrf]").get_attribute("value")
    response = await page.request.post(
        f"{dashboard.url}/tasks/{dead}/retry", form={"csrf": csrf or "", "back": "/"}
    )
    assert response.status == 403
    shown = html.unescape(await response.text())
    assert "This needs a token of scope 'operate' or above" in shown
    assert dashboard.dead(instance) == [dead]


async def test_sign_out_ends_the_session_in_this_browser(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    page = await open_page()
    await sign_in(page, dashboard, dashboard.read_token)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("Signed out.")).to_be_visible()
    await page.goto(dashboard.url + "/instances")
    await expect(page.get_by_role("heading", name="Sign in to Corral")).to_be_visible()


async def test_a_one_time_link_signs_in_once(dashboard: Dashboard, open_page: OpenPage) -> None:
    code = dashboard.codes.issue(dashboard.operate_token)
    page = await open_page()
    await page.goto(f"{dashboard.url}/signin/{code}")
    await page.wait_for_url(dashboard.url + "/")  # moved on by itself
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    again = await open_page()
    response = await again.goto(f"{dashboard.url}/signin/{code}")
    assert response is not None
    assert response.status == 404
    await expect(again.locator("main")).to_contain_text("This one-time sign-in link was used")


async def test_a_delivery_is_replayed_and_an_execution_re_run(
    dashboard: Dashboard, open_page: OpenPage
) -> None:
    instance = await dashboard.install_shop()
    hook = await dashboard.runtime.store(instance).get("webhook")
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as sender:
        answer = await sender.post(hook, json={"apples": 2}, headers={"webhook-id": "order-1"})
    assert answer.status_code == 202
    await dashboard.runtime.idle()
    [webhook] = dashboard.runtime.services.webhooks.webhooks(instance)
    page = await open_page()
    await sign_in(page, dashboard, dashboard.operate_token, f"/webhooks/{webhook.id}")

    deliveries = page.locator("table.deliveries tbody tr")
    await expect(deliveries).to_have_count(1)
    await expect(deliveries.locator(".badge")).to_have_text("ok")
    await deliveries.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_contain_text("it runs as a task")
    await dashboard.runtime.idle()
    await page.reload()
    await expect(deliveries).to_have_count(2)
    await expect(deliveries.filter(has_text="replay of")).to_contain_text("ok")

    # The first delivery's execution, re-run from its own page: the delivery again.
    await deliveries.filter(has_not_text="replay of").locator("a.mono").click()
    await expect(page.locator("main")).to_contain_text("Replays delivery")
    await page.get_by_role("button", name="Replay the delivery").click()
    await expect(page.get_by_role("status")).to_contain_text("it runs as a task")
    await dashboard.runtime.idle()
    orders = [e for e in dashboard.runtime.executions(instance) if e["method"] == "order"]
    assert [e["outcome"] for e in orders] == ["ok", "ok", "ok"]
