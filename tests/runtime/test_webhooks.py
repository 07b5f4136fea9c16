"""Webhook handlers run as an agent author relies on them (SPEC §1.3), on each database.

An agent makes its webhooks through its tools; a delivery stored by intake
(``Webhooks.accept``, what the server calls) runs the handler through the worker
with the request first and the webhook's extra arguments after; a sync one runs
in the request (``Executor.run_inline``). Everything runs in the real sandbox.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from corral import codec
from corral.config import RateLimits, Retries, RuntimeConfig
from corral.runtime.registry import Instance
from corral.runtime.webhooks import Delivery, Webhook, Webhooks, token_of
from corral.runtime.worker import DAY_MS
from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime, RuntimeFactory
from tests.support import make_webhook

HOOKS = """
import asyncio
from corral import codec
from corral.sdk import Agent
from corral.sdk.operations import Op

class Hooks(Agent):
    async def hook(self, *extra):
        try:
            url = await self.tools.network.create_webhook(self.on_event, *extra)
        except Exception as exc:
            await self.set("error", f"{type(exc).__name__}: {exc}")
            return
        await self.set("url", url)

    async def hook_callback(self):
        callback = await self.callback(self.on_event, "from-callback")
        await self.set("url", await self.tools.network.create_webhook(callback))

    async def hook_callback_with_more(self):
        callback = await self.callback(self.on_event, "from-callback")
        try:
            await self._channel.call(
                Op.WEBHOOK_CREATE, callback, codec.encode(["more"]), "async", None, None
            )
        except TypeError as exc:
            await self.set("error", str(exc))

    async def listed(self):
        await self.set("listed", await self.tools.network.list_webhooks())

    async def drop(self, url):
        await self.tools.network.delete_webhook(url)

    # What the tools would never send, which agent code still can: the host checks too.

    async def make(self, target, extra, mode="async", verify=None, max_body_bytes=None):
        try:
            url = await self._channel.call(
                Op.WEBHOOK_CREATE, ["method", target], extra, mode, verify, max_body_bytes
            )
        except Exception as exc:
            await self.set("error", f"{type(exc).__name__}: {exc}")
            return None
        await self.set("url", url)
        return url

    async def drop_raw(self, url):
        try:
            await self._channel.call(Op.WEBHOOK_DELETE, url)
        except Exception as exc:
            await self.set("error", f"{type(exc).__name__}: {exc}")

    async def on_event(self, request, *extra):
        await self.set(
            "seen",
            [request.method, request.body, request.params.get_all("a"),
             request.headers["x-kind"], request.delivery_id, list(extra)],
        )
        return {"ok": request.body}

    async def failing(self, request):
        raise RuntimeError("the handler broke")

    async def slow(self, request):
        await asyncio.sleep(30)

    async def plain(self):
        return "not a handler"
"""

TICKER = """
from corral import Plugin

class Ticker(Plugin):
    async def decide(self, ctx):
        await ctx.state.set("tick", ctx.tick)
"""


async def call(runtime: Runtime, instance: Instance, method: str, *args: Any) -> None:
    """Queue one task of the instance and run until idle."""
    runtime.executor.queue.enqueue(
        instance.id, method, codec.encode(list(args)), now=runtime.executor.now()
    )
    await runtime.idle()


async def installed(runtime: Runtime) -> Instance:
    await runtime.deploy("hooks", HOOKS)
    instance = runtime.install("hooks")
    await runtime.idle()
    return instance


def hook_of(runtime: Runtime, url: str) -> tuple[Webhooks, Webhook, Instance]:
    webhooks = runtime.services.webhooks
    found = webhooks.lookup(token_of(url))
    assert found is not None
    return webhooks, *found


def deliver(
    runtime: Runtime, url: str, body: bytes = b'{"n": 1}', dedupe: str | None = None
) -> Delivery:
    """What intake stores for a POST to ``url``."""
    webhooks, webhook, instance = hook_of(runtime, url)
    return webhooks.accept(
        webhook,
        instance,
        method="POST",
        headers=[("Content-Type", "application/json"), ("X-Kind", "push")],
        query="a=1&a=2",
        body=body,
        dedupe_key=dedupe,
        now=runtime.executor.now(),
    )


@pytest.mark.exercises(Op.WEBHOOK_CREATE, Op.WEBHOOK_LIST, Op.WEBHOOK_DELETE)
async def test_a_delivery_runs_the_handler_with_the_request_and_extra_arguments(
    runtime: Runtime,
) -> None:
    instance = await installed(runtime)
    await call(runtime, instance, "hook", "extra", 2)
    url = await runtime.store(instance.id).get("url")
    assert url.startswith("http://127.0.0.1:8000/hooks/")

    delivery = deliver(runtime, url, dedupe="gh-7")
    await runtime.idle()
    seen = await runtime.store(instance.id).get("seen")
    assert seen == ["POST", {"n": 1}, ["1", "2"], "push", "gh-7", ["extra", 2]]
    (execution,) = runtime.executions(instance.id, "on_event")
    assert (execution["trigger"], execution["delivery_id"]) == ("webhook", delivery.id)
    (view,) = runtime.services.webhooks.deliveries(url)
    assert (view.status, view.execution) == ("ok", execution["id"])
    assert view.latency_ms is not None

    await call(runtime, instance, "listed")
    _, webhook, _ = hook_of(runtime, url)
    (listed,) = await runtime.store(instance.id).get("listed")
    assert (listed["url"], listed["method"], listed["mode"]) == (url, "on_event", "async")
    assert listed["created_at"] == datetime.fromtimestamp(webhook.created_at / 1000, UTC)
    await call(runtime, instance, "drop", url)
    await call(runtime, instance, "listed")
    assert await runtime.store(instance.id).get("listed") == []
    _, webhook, _ = hook_of(runtime, url)
    assert webhook.deleted_at is not None
    await call(runtime, instance, "drop", url)  # gone already: no error
    assert runtime.tasks(instance.id, dead=True) == []


@pytest.mark.exercises(Op.WEBHOOK_CREATE)
async def test_a_callback_webhook_gets_the_callbacks_arguments(runtime: Runtime) -> None:
    instance = await installed(runtime)
    await call(runtime, instance, "hook_callback")
    deliver(runtime, await runtime.store(instance.id).get("url"))
    await runtime.idle()
    seen = await runtime.store(instance.id).get("seen")
    assert seen[-1] == ["from-callback"]
    await call(runtime, instance, "hook_callback_with_more")
    assert await runtime.store(instance.id).get("error") == (
        "a callback carries its own extra arguments: pass them to self.callback(...), "
        "or pass the method itself to create_webhook with them"
    )
    assert len(runtime.services.webhooks.list(instance.id)) == 1


@pytest.mark.exercises(Op.WEBHOOK_CREATE)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", codec.encode([])], "ValueError: Hooks has no public method 'nope' a callback"),
        (["on_event", b"junk"], "ValueError: webhook arguments must be an encoded list"),
        (["on_event", "junk"], "ValueError: webhook arguments must be an encoded list"),
        (
            ["on_event", codec.encode([]), "later"],
            "ValueError: a webhook's mode is 'async' or 'sync'",
        ),
        (
            ["on_event", codec.encode([]), "async", None, 0],
            "ValueError: max_body_bytes must be a whole number",
        ),
        (
            ["on_event", codec.encode([]), "async", "secret"],
            "ValueError: verify must be a verifier",
        ),
        (
            ["on_event", codec.encode([]), "async", {"scheme": "nope"}],
            "ValueError: ",  # verifier_from_spec's own message names the scheme
        ),
    ],
)
async def test_a_malformed_webhook_is_the_agents_error_saying_why(
    runtime: Runtime, args: list[Any], message: str
) -> None:
    instance = await installed(runtime)
    await call(runtime, instance, "make", *args)
    error = await runtime.store(instance.id).get("error")
    assert error.startswith(message)
    assert runtime.services.webhooks.list(instance.id) == []


@pytest.mark.exercises(Op.WEBHOOK_CREATE)
async def test_the_webhooks_quota_is_the_agents_error(runtime_factory: RuntimeFactory) -> None:
    runtime = await runtime_factory(
        replace(RuntimeConfig(), quotas=replace(RuntimeConfig().quotas, webhooks=1))
    )
    instance = await installed(runtime)
    await call(runtime, instance, "hook")
    await call(runtime, instance, "hook")
    error = await runtime.store(instance.id).get("error")
    assert error.startswith("QuotaExceeded: this instance has 1 webhooks, and its quota is 1")


@pytest.mark.exercises(Op.WEBHOOK_DELETE)
async def test_deleting_a_webhook_by_something_not_a_url_is_the_agents_error(
    runtime: Runtime,
) -> None:
    instance = await installed(runtime)
    await call(runtime, instance, "drop_raw", 5)
    error = await runtime.store(instance.id).get("error")
    assert error == "TypeError: a webhook URL must be a non-empty str, got int"


async def test_a_failing_handler_is_retried_then_its_delivery_is_dead(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = await runtime_factory(replace(RuntimeConfig(), retries=Retries(attempts=1)))
    instance = await installed(runtime)
    webhook = make_webhook(
        runtime.services.webhooks, instance.id, "failing", now=runtime.executor.now()
    )
    deliver(runtime, webhook.url(runtime.services.webhooks.public_url))
    await runtime.idle()
    (view,) = runtime.services.webhooks.deliveries(webhook.id)
    assert view.status == "dead"
    assert view.execution is not None


async def test_a_delivery_gone_before_it_ran_dead_letters_its_task_saying_why(
    runtime: Runtime,
) -> None:
    instance = await installed(runtime)
    webhooks = runtime.services.webhooks
    webhook = make_webhook(webhooks, instance.id, "on_event", now=runtime.executor.now())
    delivery = deliver(runtime, webhook.url(webhooks.public_url))
    webhooks.purge(runtime.executor.now() + 1)
    await runtime.idle()
    (dead,) = runtime.tasks(instance.id, dead=True)
    assert dead.last_error is not None
    assert f"its webhook delivery {delivery.id} is gone (deliveries are kept 30 days)" in (
        dead.last_error
    )
    assert runtime.executions(instance.id, "on_event") == []


async def test_a_plugin_has_a_tick_endpoint_whose_body_is_the_tick(runtime: Runtime) -> None:
    await runtime.deploy("ticker", TICKER)
    instance = runtime.install("ticker")
    await runtime.idle()
    webhooks = runtime.services.webhooks
    (endpoint,) = webhooks.webhooks(instance.id)
    assert (endpoint.kind, endpoint.method, endpoint.mode) == ("tick", "on_tick", "async")
    assert webhooks.list(instance.id) == []  # the platform's, not the agent's
    delivery = deliver(runtime, endpoint.url(webhooks.public_url), body=b'{"price": 101}')
    await runtime.idle()
    assert await runtime.store(instance.id).get("tick") == {"price": 101}
    (execution,) = [e for e in runtime.executions(instance.id) if e["delivery_id"]]
    assert (execution["trigger"], execution["delivery_id"]) == ("tick", delivery.id)

    runtime.executor.registry.uninstall(instance.id, now=runtime.executor.now())
    assert webhooks.webhooks(instance.id) == []


# -- sync: Executor.run_inline -----------------------------------------------------------


async def inline(
    runtime: Runtime, instance: Instance, method: str, deadline_s: float = 10.0
) -> tuple[Delivery, Any]:
    webhooks = runtime.services.webhooks
    webhook = make_webhook(webhooks, instance.id, method, now=runtime.executor.now(), mode="sync")
    delivery = deliver(runtime, webhook.url(webhooks.public_url))
    version = runtime.executor.registry.current_version(instance.agent)
    current = runtime.executor.registry.instance(instance.id)
    record = await runtime.executor.run_inline(
        current,
        version,
        method,
        [delivery.request_wire()],
        delivery_id=delivery.id,
        deadline_s=deadline_s,
    )
    if record is not None:
        webhooks.answer(delivery.id, record, version.number, 200, [], b"", runtime.executor.now())
    return delivery, record


async def test_a_sync_handler_runs_in_the_request_and_its_record_is_written_with_the_answer(
    runtime: Runtime,
) -> None:
    instance = await installed(runtime)
    delivery, record = await inline(runtime, instance, "on_event")
    assert record.result.outcome.value == "ok"
    assert record.result.result == {"ok": {"n": 1}}
    assert (record.trigger, record.delivery_id) == ("webhook", delivery.id)
    (execution,) = runtime.executions(instance.id, "on_event")
    assert (execution["id"], execution["delivery_id"]) == (record.id, delivery.id)
    assert [t for t in runtime.tasks(instance.id) if t.trigger == "webhook"] == []


async def test_a_sync_handlers_exception_is_its_record_and_its_log(runtime: Runtime) -> None:
    instance = await installed(runtime)
    _, record = await inline(runtime, instance, "failing")
    assert record.result.outcome.value == "error"
    assert record.result.error["message"] == "the handler broke"
    assert "RuntimeError: the handler broke" in runtime.logs(instance.id)


async def test_a_sync_handler_is_stopped_at_the_deadline(runtime: Runtime) -> None:
    instance = await installed(runtime)
    _, record = await inline(runtime, instance, "slow", deadline_s=0.5)
    assert record.result.outcome.value == "timeout"


async def test_a_sync_webhook_to_a_method_the_version_lacks_is_a_failed_record(
    runtime: Runtime,
) -> None:
    instance = await installed(runtime)
    delivery, record = await inline(runtime, instance, "gone")
    assert record.result.outcome.value == "error"
    assert record.result.error["type"] == "UnknownMethod"
    assert "hooks v1 has no method 'gone'" in record.result.error["message"]
    (view,) = runtime.services.webhooks.deliveries(delivery.webhook_id)
    assert view.status == "error"


async def test_a_sync_webhook_over_the_rate_limits_suspends_and_runs_nothing(
    runtime_factory: RuntimeFactory,
) -> None:
    limits = RateLimits(per_5min=1, per_24h=100)  # one execution (Hooks has no activate)
    runtime = await runtime_factory(replace(RuntimeConfig(), rate_limits=limits))
    instance = await installed(runtime)
    _, record = await inline(runtime, instance, "on_event")
    assert record is not None
    _, record = await inline(runtime, instance, "on_event")
    assert record is None
    status, reason = runtime.status(instance.id)
    assert status == "suspended"
    assert reason is not None
    assert "auto-suspended" in reason
    assert len(runtime.executions(instance.id, "on_event")) == 1


async def test_workers_delete_deliveries_past_retention(runtime_factory: RuntimeFactory) -> None:
    first = await runtime_factory()
    instance = await installed(first)
    webhooks = first.services.webhooks
    webhook = make_webhook(webhooks, instance.id, "on_event", now=first.executor.now(), mode="sync")
    deliver(first, webhook.url(webhooks.public_url))
    first.clock.advance(29 * DAY_MS)
    later = await runtime_factory()  # a worker that has not purged yet
    await later.idle()
    assert len(webhooks.deliveries(webhook.id)) == 1
    first.clock.advance(2 * DAY_MS)
    await (await runtime_factory()).idle()
    assert webhooks.deliveries(webhook.id) == []
