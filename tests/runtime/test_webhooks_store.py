"""Webhooks and their deliveries as the server and operators rely on them, on each database.

What intake calls (lookup, find_duplicate, accept, answer) and what the delivery
log shows (deliveries, replay, purge), against real installed instances. The
handlers' runs through the worker are in test_webhooks.py.
"""

from __future__ import annotations

import secrets

import pytest

from corral import codec
from corral.config import RuntimeConfig
from corral.errors import ConfigError, QuotaExceeded, UnknownDelivery, UnknownWebhook
from corral.quotas import Quotas
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import Instance
from corral.runtime.webhooks import (
    Webhook,
    Webhooks,
    dedupe_key,
    delivery_of,
    new_token,
    token_of,
)
from corral.sandbox.limits import ExecutionResult, Outcome
from corral.tasks.queue import ClaimedTask
from corral.webhooks import GitHubSignature
from tests.runtime.conftest import Runtime
from tests.support import make_webhook

HOURS_MS = 3_600_000

HOOKED = """
from corral.sdk import Agent

class Hooked(Agent):
    async def on_event(self, request, *extra):
        await self.set("seen", [request.delivery_id, request.body, list(extra)])
        return {"ok": True}
"""


async def installed(runtime: Runtime) -> tuple[Webhooks, Instance]:
    await runtime.deploy("hooked", HOOKED)
    return runtime.services.webhooks, runtime.install("hooked")


def made(webhooks: Webhooks, instance: Instance, runtime: Runtime, **options: object) -> Webhook:
    given: dict[str, object] = {
        "mode": "async",
        "verify": None,
        "max_body_bytes": None,
        "quotas": None,
        **options,
    }
    return webhooks.create(
        instance.id,
        "on_event",
        codec.encode(["extra"]),
        now=runtime.executor.now(),
        **given,  # type: ignore[arg-type]
    )


def test_a_token_never_starts_with_a_dash_which_a_command_line_takes_for_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = iter(["-" + "a" * 42, "b" * 43])  # one of 64 tokens drawn starts with "-"
    monkeypatch.setattr(secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert new_token() == "b" * 43


async def test_a_webhook_is_found_by_its_token_and_a_deleted_one_stays_a_tombstone(
    runtime: Runtime,
) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime)
    assert webhook.id.startswith("wh_")
    assert len(webhook.token) >= 43
    url = webhook.url(webhooks.public_url)
    assert url == f"http://127.0.0.1:8000/hooks/{webhook.token}"
    found = webhooks.lookup(webhook.token)
    assert found is not None
    assert found[0] == webhook
    assert found[1].id == instance.id
    assert webhooks.list(instance.id) == [webhook]
    assert webhooks.lookup("no-such-token") is None

    webhooks.delete(instance.id, url, now=runtime.executor.now())
    assert webhooks.list(instance.id) == []
    gone = webhooks.lookup(webhook.token)
    assert gone is not None
    assert gone[0].deleted_at == runtime.executor.now()
    webhooks.delete(instance.id, url, now=runtime.executor.now())  # again: no error
    webhooks.delete(instance.id, "never-made", now=runtime.executor.now())


async def test_another_instance_cannot_delete_a_webhook(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    other = runtime.install("hooked")
    webhook = made(webhooks, instance, runtime)
    webhooks.delete(other.id, webhook.token, now=runtime.executor.now())
    assert webhooks.list(instance.id) == [webhook]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "later"}, "a webhook's mode is 'async' or 'sync', got 'later'"),
        ({"max_body_bytes": 0}, "max_body_bytes must be a whole number from 1 to 1,048,576"),
        ({"max_body_bytes": 2**21}, "max_body_bytes must be a whole number from 1 to 1,048,576"),
        ({"max_body_bytes": "big"}, "got 'big'"),
        ({"verify": "secret"}, "verify must be a verifier from corral.webhooks"),
        (
            {"verify": GitHubSignature("s" * 4096).spec()},
            "the verifier takes 5,495 bytes as stored; at most 4,096 are kept",
        ),
    ],
)
async def test_a_malformed_webhook_is_refused_saying_why(
    runtime: Runtime, options: dict[str, object], message: str
) -> None:
    webhooks, instance = await installed(runtime)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        made(webhooks, instance, runtime, **options)
    assert webhooks.list(instance.id) == []


async def test_a_webhook_keeps_no_more_than_64_kib_of_extra_arguments(runtime: Runtime) -> None:
    """The quota counts webhooks; each one's size is bounded too, so a few cannot hold
    gigabytes of the database."""
    webhooks, instance = await installed(runtime)
    now = runtime.executor.now()
    kept = make_webhook(webhooks, instance.id, "on_event", ["x" * 60_000], now=now)
    assert webhooks.list(instance.id) == [kept]
    with pytest.raises(
        ValueError, match=r"extra arguments take 70,00\d bytes encoded; at most 65,536"
    ):
        make_webhook(webhooks, instance.id, "on_event", ["x" * 70_000], now=now)
    assert webhooks.list(instance.id) == [kept]


async def test_the_webhooks_quota_counts_live_webhooks(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    quotas = Quotas(webhooks=2)
    first = made(webhooks, instance, runtime, quotas=quotas)
    made(webhooks, instance, runtime, quotas=quotas)
    with pytest.raises(QuotaExceeded, match="this instance has 2 webhooks, and its quota is 2"):
        made(webhooks, instance, runtime, quotas=quotas)
    webhooks.delete(instance.id, first.token, now=runtime.executor.now())
    made(webhooks, instance, runtime, quotas=quotas)  # a tombstone does not count
    assert len(webhooks.list(instance.id)) == 2


async def test_an_async_delivery_is_stored_with_its_task(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime)
    headers = [("Content-Type", "application/json"), ("X-GitHub-Delivery", "gh-1")]
    delivery = webhooks.accept(
        webhook,
        instance,
        method="POST",
        headers=headers,
        query="a=1&a=2",
        body=b'{"n": 1}',
        dedupe_key=webhooks.dedupe_key(headers),
        now=runtime.executor.now(),
    )
    assert delivery.id.startswith("dl_")
    assert delivery.delivery_id == "gh-1"
    (task,) = [t for t in runtime.tasks(instance.id) if t.trigger == "webhook"]
    assert (task.method, codec.decode(task.args)) == ("on_event", [delivery.id])
    loaded = webhooks.delivery(delivery.id)
    assert loaded is not None
    stored, extra = loaded
    assert stored.task_token == task.token is not None
    assert extra == ["extra"]
    assert (stored.headers, stored.body, stored.query) == (headers, b'{"n": 1}', "a=1&a=2")
    wire = stored.request_wire()
    assert (wire["delivery_id"], wire["body"], wire["query"]) == ("gh-1", b'{"n": 1}', "a=1&a=2")


async def test_a_sync_delivery_queues_nothing_and_keeps_its_answer(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime, mode="sync")
    now = runtime.executor.now()
    delivery = webhooks.accept(
        webhook, instance, method="GET", headers=[], query="", body=b"", dedupe_key="k", now=now
    )
    assert [t for t in runtime.tasks(instance.id) if t.trigger == "webhook"] == []
    (view,) = webhooks.deliveries(webhook.id)
    assert (view.status, view.latency_ms, view.execution) == ("running", None, None)

    result = ExecutionResult(Outcome.OK, result={"ok": True}, logs=[("info", "handled")])
    record = ExecutionRecord(instance.id, "on_event", "webhook", result, delivery_id=delivery.id)
    webhooks.answer(
        delivery.id, record, 1, 200, [("content-type", "application/json")], b"{}", now + 7
    )
    (view,) = webhooks.deliveries(webhook.token)
    assert (view.status, view.latency_ms, view.execution) == ("ok", 7.0, record.id)
    assert view.delivery.response is not None
    assert view.delivery.response.status == 200
    assert view.delivery.response.body == b"{}"
    (execution,) = runtime.executions(instance.id, "on_event")
    assert (execution["delivery_id"], execution["trigger"]) == (delivery.id, "webhook")
    assert execution["logs"] == [{"level": "info", "line": "handled"}]

    duplicate = webhooks.find_duplicate(webhook.id, "k", now - 1)
    assert duplicate is not None
    assert duplicate.response == view.delivery.response
    assert duplicate.duplicates == 1


async def test_a_sync_delivery_that_ran_nothing_is_listed_as_not_run(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime, mode="sync")
    now = runtime.executor.now()
    delivery = webhooks.accept(
        webhook, instance, method="POST", headers=[], query="", body=b"", dedupe_key=None, now=now
    )
    webhooks.answer(delivery.id, None, None, 503, [], b"", now)
    (view,) = webhooks.deliveries(webhook.id)
    assert (view.status, view.execution) == ("not_run", None)
    assert view.delivery.response is not None
    assert view.delivery.response.status == 503


async def test_a_repeated_delivery_id_is_a_duplicate_only_within_the_window(
    runtime: Runtime,
) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime)
    now = runtime.executor.now()
    first = webhooks.accept(
        webhook, instance, method="POST", headers=[], query="", body=b"1", dedupe_key="d", now=now
    )
    later = now + 73 * HOURS_MS
    window = 72 * HOURS_MS
    assert webhooks.find_duplicate(webhook.id, "other", now - window) is None
    again = webhooks.find_duplicate(webhook.id, "d", now - window)
    assert again is not None
    assert (again.id, again.duplicates) == (first.id, 1)
    again = webhooks.find_duplicate(webhook.id, "d", now - window)
    assert again is not None
    assert again.duplicates == 2
    assert webhooks.find_duplicate(webhook.id, "d", later - window) is None
    (view,) = webhooks.deliveries(webhook.id)
    assert view.delivery.duplicates == 2


async def test_replay_queues_a_new_delivery_of_the_same_request(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime, mode="sync")
    now = runtime.executor.now()
    headers = [("webhook-id", "msg_1")]
    first = webhooks.accept(
        webhook,
        instance,
        method="PUT",
        headers=headers,
        query="q=1",
        body=b"x",
        dedupe_key="msg_1",
        now=now,
    )
    replayed = webhooks.replay(first.id, now=now + 1)
    assert replayed.id != first.id
    assert (replayed.replay_of, replayed.mode, replayed.delivery_id) == (first.id, "async", "msg_1")
    assert (replayed.method, replayed.headers, replayed.query, replayed.body) == (
        "PUT",
        headers,
        "q=1",
        b"x",
    )
    (task,) = [t for t in runtime.tasks(instance.id) if t.trigger == "webhook"]
    assert codec.decode(task.args) == [replayed.id]
    views = webhooks.deliveries(webhook.id)
    assert [(v.delivery.id, v.status) for v in views] == [
        (replayed.id, "queued"),
        (first.id, "running"),
    ]
    with pytest.raises(UnknownDelivery, match="there is no delivery 'dl_nope'"):
        webhooks.replay("dl_nope", now=now)
    webhooks.delete(instance.id, webhook.token, now=now)
    with pytest.raises(UnknownWebhook, match=r"its webhook wh_\S+ was deleted"):
        webhooks.replay(first.id, now=now)


async def test_purge_removes_old_deliveries_and_tombstones_only(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    kept, deleted = made(webhooks, instance, runtime), made(webhooks, instance, runtime)
    now = runtime.executor.now()
    for at in (now, now + 10):
        webhooks.accept(
            kept, instance, method="POST", headers=[], query="", body=b"", dedupe_key=None, now=at
        )
    webhooks.delete(instance.id, deleted.token, now=now)
    assert webhooks.purge(now + 5) == 1
    assert webhooks.purge(now + 5) == 0  # twice (another worker): harmless
    assert [v.delivery.received_at for v in webhooks.deliveries(kept.id)] == [now + 10]
    assert webhooks.lookup(deleted.token) is None
    assert webhooks.lookup(kept.token) is not None


async def test_uninstall_tombstones_the_instances_webhooks(runtime: Runtime) -> None:
    webhooks, instance = await installed(runtime)
    webhook = made(webhooks, instance, runtime)
    runtime.executor.registry.uninstall(instance.id, now=runtime.executor.now())
    found = webhooks.lookup(webhook.token)
    assert found is not None
    assert found[0].deleted_at is not None
    assert webhooks.webhooks(instance.id) == []
    await runtime.idle()  # deactivate runs; the instance is removed
    found = webhooks.lookup(webhook.token)
    assert found is not None
    assert found[1].status == "removed"  # kept until retention


async def test_unknown_webhooks_and_bad_limits_are_said(runtime: Runtime) -> None:
    webhooks, _ = await installed(runtime)
    with pytest.raises(UnknownWebhook, match="there is no webhook 'wh_nope'"):
        webhooks.deliveries("wh_nope")
    with pytest.raises(ValueError, match="limit must be from 1 to 1000, got 0"):
        webhooks.deliveries("wh_nope", limit=0)


def test_the_sender_delivery_id_is_read_from_the_configured_headers() -> None:
    config = RuntimeConfig.load(environ={"CORRAL_WEBHOOKS_DEDUPE_HEADERS": "X-Request-Id"})
    assert config.webhooks.dedupe_header_names == ("X-Request-Id",)
    with pytest.raises(ConfigError, match="header names separated by commas"):
        RuntimeConfig.load(environ={"CORRAL_WEBHOOKS_DEDUPE_HEADERS": "webhook id"})


def test_the_helpers_read_urls_headers_and_tasks() -> None:
    assert token_of("http://h:1/hooks/abc?x=1") == "abc"
    assert token_of("abc") == "abc"
    names = RuntimeConfig().webhooks.dedupe_header_names
    assert names == ("webhook-id", "svix-id", "X-GitHub-Delivery", "Idempotency-Key")
    assert dedupe_key([("Svix-Id", "s"), ("Webhook-Id", "w")], names) == "w"
    assert dedupe_key([("Idempotency-Key", "i")], names) == "i"
    assert dedupe_key([("X-Other", "o")], names) is None

    def task(trigger: str, args: list[object]) -> ClaimedTask:
        return ClaimedTask(1, "i", trigger, "m", codec.encode(args), 1, 3, None)

    assert delivery_of(task("webhook", ["dl_x"])) == "dl_x"
    assert delivery_of(task("tick", ["dl_x"])) == "dl_x"
    assert delivery_of(task("tick", [])) is None
    assert delivery_of(task("task", ["dl_x"])) is None
