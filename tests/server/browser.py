"""What the dashboard's suites share: a server on a free port with a real worker beside
it, a shop agent that leaves something on every page, tokens, and Debian's chromium
driven by Playwright.

The server is the app ``corral dev`` serves (``create_app``, one-time sign-in codes
included) under uvicorn; the worker runs the shop's tasks when a test says so
(``Runtime.idle``), in real sandboxes, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from corral import codec
from corral.config import Retries, RuntimeConfig, ServerSettings
from corral.server.app import create_app
from corral.server.dashboard import SignInCodes
from corral.server.serving import HttpServer, Listener, stop_grace_s
from tests.runtime.conftest import NO_RATE_LIMITS, Runtime, RuntimeFactory

CHROMIUM = os.environ.get("CORRAL_CHROMIUM", "/usr/bin/chromium")
#: For any one wait on the server or the browser: generous, as the suite shares two cores.
TIMEOUT_S = 60.0
expect.set_options(timeout=TIMEOUT_S * 1000)

SHOP = r"""
from datetime import datetime, timezone

from corral import ActivityType, Agent


class Shop(Agent):
    limits = {"timeout_s": 30}

    async def activate(self, priority):
        url = await self.tools.network.create_webhook(self.order)
        await self.store.set_many({
            "webhook": url,
            "greeting": "hello",
            "point": (1, 2),
            "opened": datetime(2026, 1, 31, 14, 5, tzinfo=timezone.utc),
            "blob": b"\x00\x01\x02",
            "stock:apples": 12,
            "stock:pears": 3,
        })
        await self.store.set_with_ttl("session", {"user": "ada"}, 3_600_000)
        await self.tools.plot.create_activity({
            "type": ActivityType.ACTION,
            "title": "Restock the pears",
            "source": "shop:restock:pears",
            "notes": [{"content": "only 3 left", "key": "stock"}],
        })
        print("shop opened")

    async def say(self, text):
        print(text)
        return {"said": text}

    async def flaky(self, label):
        if not await self.store.get_or_default(f"failed:{label}", False):
            await self.store.set(f"failed:{label}", True)
            raise RuntimeError(f"flaky {label} fails its first run")
        print(f"flaky {label} ran")

    async def later(self, n):
        print(f"later {n}")

    async def order(self, request):
        await self.store.set(f"order:{request.delivery_id}", request.body)
        print(f"order {request.delivery_id}")
"""


@dataclass
class Dashboard:
    """A served dashboard: its URL, the runtime beside it, and tokens to sign in with."""

    url: str
    runtime: Runtime
    codes: SignInCodes
    operate_token: str
    read_token: str

    def enqueue(self, instance: str, method: str, *args: Any, in_s: float = 0) -> None:
        """A task for the shop, as its own ``run_task`` would make it."""
        now = self.runtime.executor.now()
        self.runtime.executor.queue.enqueue(
            instance,
            method,
            codec.encode(list(args)),
            now=now,
            run_at=now + int(in_s * 1000) if in_s else None,
        )

    async def install_shop(self, name: str = "shop") -> str:
        await self.runtime.deploy(name, SHOP)
        instance = self.runtime.install(name, priority="shops").id
        await self.runtime.idle()
        records = self.runtime.executions(instance, "activate")
        assert [r["outcome"] for r in records] == ["ok"], records
        return instance

    def dead(self, instance: str) -> list[int]:
        return [task.id for task in self.runtime.tasks(instance, dead=True)]


def config() -> RuntimeConfig:
    """One attempt per task: a failure is a dead letter at once."""
    return RuntimeConfig(retries=Retries(attempts=1), rate_limits=NO_RATE_LIMITS)


@contextlib.asynccontextmanager
async def served(runtime_factory: RuntimeFactory) -> AsyncIterator[Dashboard]:
    listener = Listener("127.0.0.1", 0)
    base = config()
    runtime = await runtime_factory(replace(base, server=ServerSettings(port=listener.port)))
    codes = SignInCodes()
    app = create_app(
        runtime.services, executor=runtime.executor, on_accept=runtime.worker.wake, sign_in=codes
    )
    ready = asyncio.Event()
    http = HttpServer(
        app,
        listener,
        on_ready=ready.set,
        own_signals=False,
        grace_s=stop_grace_s(base.webhooks),
        on_stop=app.state.streams.stop,
    )
    task = asyncio.create_task(http.run_until_stopped())
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({task, started}, timeout=TIMEOUT_S, return_when="FIRST_COMPLETED")
    if not ready.is_set():
        started.cancel()
        raise RuntimeError(f"the server did not start: {task}")
    tokens = runtime.services.tokens
    now = runtime.executor.now()
    _, operate = tokens.create("operate", "ops on call", now=now)
    _, read = tokens.create("read", "a reader", now=now)
    try:
        yield Dashboard(listener.url, runtime, codes, operate, read)
    finally:
        http.stop()
        await asyncio.wait({task}, timeout=TIMEOUT_S)
        listener.close()


@pytest.fixture
async def dashboard(runtime_factory: RuntimeFactory) -> AsyncIterator[Dashboard]:
    async with served(runtime_factory) as made:
        yield made


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (``make test`` installs it); missing, the browser tests fail
    saying how to get it."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium), "
            "or point CORRAL_CHROMIUM at a Chromium",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """New pages, each in a context of its own (its own cookies): a browser each."""
    contexts: list[BrowserContext] = []

    async def new(**options: Any) -> Page:
        context = await browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_S * 1000)
        contexts.append(context)
        return await context.new_page()

    yield new
    for context in contexts:
        await context.close()


async def sign_in(page: Page, dashboard: Dashboard, token: str, path: str = "/") -> None:
    """Open ``path``, be sent to the sign-in form, and sign in with ``token``."""
    await page.goto(dashboard.url + path)
    assert re.search(r"/signin\?next=", page.url), page.url
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(re.escape(dashboard.url + path) + r"$"))


def signed_in_client(dashboard: Dashboard, token: str) -> httpx.AsyncClient:
    """An HTTP client holding a session cookie, as a signed-in browser without scripts."""
    return httpx.AsyncClient(
        base_url=dashboard.url,
        cookies={"corral_session": token},
        timeout=TIMEOUT_S,
    )


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)
