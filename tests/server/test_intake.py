"""Webhook intake over real HTTP (SPEC §1.3): every status code in its order, async
deliveries run by the worker once each, duplicates, verifiers, raw bodies.

Each test serves the app on a free port beside a worker, on SQLite and on
PostgreSQL; the agent in tests/server/agents.py makes the webhooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import pytest

from corral.config import RuntimeConfig, WebhookSettings
from corral.runtime.registry import SUSPENDED
from corral.sandbox.pool import PER_INSTANCE
from tests.server.agents import (
    GITHUB_SECRET,
    HOOKS,
    STANDARD_SECRET,
    STRIPE_SECRET,
    spec_webhook,
)
from tests.server.conftest import Serve, Served, path_of

NOT_FOUND = {"error": {"code": "not_found", "message": "no such webhook"}}


async def hooks(serve: Serve, config: RuntimeConfig | None = None) -> tuple[Served, str]:
    served = await serve(config)
    return served, await served.install("hooks", HOOKS)


async def webhook(served: Served, instance: str, name: str) -> str:
    """The path of a new webhook of the instance, made as ``WEBHOOKS[name]`` says."""
    made = spec_webhook(
        served.runtime.services.webhooks, instance, name, now=served.runtime.clock.now_ms
    )
    url = made.url(served.runtime.services.webhooks.public_url)
    assert url.startswith(f"{served.url}/hooks/")  # the URL names the server's port
    return path_of(url)


def deliveries(served: Served, path: str) -> list[object]:
    return list(served.runtime.services.webhooks.deliveries(path.removeprefix("/hooks/")))


# -- refused before anything is read or stored -------------------------------------------


async def test_an_unknown_or_malformed_token_is_404_and_says_nothing_more(serve: Serve) -> None:
    served, _ = await hooks(serve)
    for path in [
        "/hooks/" + "A" * 43,
        "/hooks/not%20a%20token",
        "/hooks/%00",
        "/hooks/" + "x" * 5000,
        "/hooks/..%2F..%2Fetc",
        "/hooks/é",
    ]:
        response = await served.client.post(path, content=b"{}")
        assert (response.status_code, response.json()) == (404, NOT_FOUND), path
    response = await served.client.get("/nothing/here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_methods_other_than_the_five_are_405(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    for method in ["OPTIONS", "HEAD", "PROPFIND"]:
        response = await served.client.request(method, path)
        assert response.status_code == 405, method
        assert response.headers["allow"] == "POST, PUT, PATCH, GET, DELETE"
    response = await served.client.request("OPTIONS", path)
    assert response.json()["error"] == {
        "code": "method_not_allowed",
        "message": "a webhook takes POST, PUT, PATCH, GET, DELETE, not OPTIONS",
    }
    for method in ["POST", "PUT", "PATCH", "GET", "DELETE"]:
        response = await served.client.request(method, path, headers={"webhook-id": method})
        assert response.status_code == 202, method
    await served.runtime.idle()
    for method in ["POST", "PUT", "PATCH", "GET", "DELETE"]:
        assert (await served.stored(instance, f"seen:{method}"))["method"] == method


async def test_a_deleted_webhook_and_an_uninstalled_instance_answer_410(serve: Serve) -> None:
    served, instance = await hooks(serve)
    services = served.runtime.services
    deleted = await webhook(served, instance, "async")
    services.webhooks.delete(instance, deleted, now=served.runtime.clock.now_ms)
    response = await served.client.post(deleted, content=b"x")
    assert response.status_code == 410
    assert response.json() == {"error": {"code": "gone", "message": "this webhook was deleted"}}

    live = await webhook(served, instance, "sync")
    assert (await served.client.post(live + "?shape=none")).status_code == 204
    services.registry.uninstall(instance, now=served.runtime.clock.now_ms)
    assert (await served.client.post(live)).status_code == 410
    await served.runtime.idle()  # deactivate, then the instance is removed
    assert (await served.client.post(live)).status_code == 410


async def test_a_body_over_the_cap_is_413_by_content_length_or_as_it_streams(
    serve: Serve,
) -> None:
    served, instance = await hooks(serve)
    small = await webhook(served, instance, "small")  # max_body_bytes=100
    response = await served.client.post(small, content=b"x" * 101)
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "too_large",
        "message": "the body is over this webhook's limit of 100 bytes",
    }

    async def chunked(size: int):  # no Content-Length: the stream is cut at the cap
        for _ in range(size // 10):
            yield b"y" * 10

    response = await served.client.post(small, content=chunked(200))
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    response = await served.client.post(small, content=chunked(100), headers={"webhook-id": "c"})
    assert response.status_code == 202
    response = await served.client.post(small, content=b"z" * 100, headers={"webhook-id": "n"})
    assert response.status_code == 202
    assert len(deliveries(served, small)) == 2

    # The server-wide cap, for a webhook without its own.
    capped, instance = await hooks(
        serve, RuntimeConfig(webhooks=WebhookSettings(max_body_bytes=1000))
    )
    path = await webhook(capped, instance, "async")
    assert (await capped.client.post(path, content=b"x" * 1001)).status_code == 413
    assert (await capped.client.post(path, content=b"x" * 1000)).status_code == 202


async def test_a_suspended_instance_is_503_with_retry_after(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    served.runtime.services.registry.set_status(instance, SUSPENDED, "too many executions")
    response = await served.client.post(path, content=b"{}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert response.json()["error"]["code"] == "suspended"
    assert deliveries(served, path) == []


async def test_a_json_content_type_over_a_body_that_does_not_parse_is_400(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    response = await served.client.post(
        path, content=b'{"a": 1,', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(
        "the body is not valid JSON although its Content-Type (application/json) says it is: "
    )
    assert deliveries(served, path) == []
    response = await served.client.post(  # the same bytes as text are fine
        path, content=b'{"a": 1,', headers={"content-type": "text/plain"}
    )
    assert response.status_code == 202


async def test_a_delivery_id_longer_than_kept_is_400(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    response = await served.client.post(path, headers={"idempotency-key": "k" * 257})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "the delivery id is 257 characters long; at most 256 are taken"
    )


# -- async deliveries ---------------------------------------------------------------------


async def test_an_async_delivery_is_stored_then_run_once_by_a_worker(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    response = await served.client.post(
        path + "?tag=a&tag=b&empty=",
        json={"n": 1},
        headers={"X-Event": "push", "webhook-id": "msg_1"},
    )
    assert response.status_code == 202
    body = response.json()
    assert body["queued"] is True
    assert body["delivery_id"].startswith("dl_")
    assert "duplicate" not in body
    await served.runtime.idle()
    assert await served.stored(instance, "runs:msg_1") == 1
    assert await served.stored(instance, "seen:msg_1") == {
        "source": "extra",  # the webhook's extra argument, after the request
        "method": "POST",
        "body": {"n": 1},
        "params": [("tag", "a"), ("tag", "b"), ("empty", "")],
        "event": "push",
    }
    [execution] = served.runtime.executions(instance, "count")
    assert (execution["trigger"], execution["outcome"]) == ("webhook", "ok")


async def test_without_a_sender_id_the_handler_sees_corrals(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    delivery_id = (await served.client.post(path, content=b"hi")).json()["delivery_id"]
    await served.runtime.idle()
    assert await served.stored(instance, f"runs:{delivery_id}") == 1


async def test_a_repeated_delivery_id_is_answered_like_the_first_and_runs_once(
    serve: Serve,
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    first = await served.client.post(path, content=b"1", headers={"X-GitHub-Delivery": "d-1"})
    again = await served.client.post(path, content=b"2", headers={"X-GitHub-Delivery": "d-1"})
    other = await served.client.post(path, content=b"3", headers={"X-GitHub-Delivery": "d-2"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json() == {
        "queued": True,
        "delivery_id": first.json()["delivery_id"],
        "duplicate": True,
    }
    assert other.json()["delivery_id"] != first.json()["delivery_id"]
    await served.runtime.idle()
    assert await served.stored(instance, "runs:d-1") == 1
    assert await served.stored(instance, "raw:d-1") == b"1"  # the first one's body
    assert await served.stored(instance, "runs:d-2") == 1
    assert len(served.runtime.executions(instance, "count")) == 2


async def test_copies_of_one_delivery_sent_at_once_are_one_delivery(serve: Serve) -> None:
    """Senders retry on timeouts, so copies may arrive together (on PostgreSQL, on
    separate connections of one server or on several servers): one is stored and run."""
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    answers = await asyncio.gather(
        *(
            served.client.post(path, content=b"%d" % n, headers={"X-GitHub-Delivery": "burst"})
            for n in range(16)
        )
    )
    assert [a.status_code for a in answers] == [202] * 16
    assert len({a.json()["delivery_id"] for a in answers}) == 1
    assert sum(bool(a.json().get("duplicate")) for a in answers) == 15
    await served.runtime.idle()
    assert await served.stored(instance, "runs:burst") == 1


async def test_sync_deliveries_past_an_instance_s_share_are_503_and_not_stored(
    serve: Serve,
) -> None:
    """Each sync run holds a sandboxed process while its sender waits: one instance's
    burst is refused past its share, and another instance's hooks still answer."""
    served, instance = await hooks(serve)
    other = await served.install("other", HOOKS)
    path, other_path = await webhook(served, instance, "sync"), await webhook(served, other, "sync")
    running = [
        asyncio.create_task(
            served.client.post(f"{path}?shape=slow&s=3", headers={"webhook-id": f"b{n}"})
        )
        for n in range(PER_INSTANCE)
    ]
    for n in range(PER_INSTANCE):  # each handler's own store write says it runs
        while not await served.stored(instance, f"slow_started:b{n}"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    refused = await served.client.post(f"{path}?shape=dict", headers={"webhook-id": "over"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "busy"
    served_meanwhile = await served.client.post(f"{other_path}?shape=str")
    assert (served_meanwhile.status_code, served_meanwhile.text) == (200, "plain text, é")
    assert [(await r).text for r in running] == ["slept"] * PER_INSTANCE
    assert len(deliveries(served, path)) == PER_INSTANCE  # the refused one was not stored
    again = await served.client.post(f"{path}?shape=dict", headers={"webhook-id": "over"})
    assert again.status_code == 200


async def test_the_raw_body_reaches_the_handler_byte_for_byte(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "github")
    odd = b' \t{"a" :\r\n  1 ,"b":"\xc3\xa9"}  \n\n'
    weird = b"\x00\xff\xfe not UTF-8 \r\n\t  \x80"
    for n, (body, content_type) in enumerate(
        [(odd, "application/json"), (weird, "application/octet-stream"), (weird, "text/plain")]
    ):
        signature = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        response = await served.client.post(
            path,
            content=body,
            headers={
                "content-type": content_type,
                "X-Hub-Signature-256": f"sha256={signature}",
                "webhook-id": f"raw-{n}",
            },
        )
        assert response.status_code == 202, response.text
    await served.runtime.idle()
    assert await served.stored(instance, "raw:raw-0") == odd
    assert (await served.stored(instance, "seen:raw-0"))["body"] == {"a": 1, "b": "é"}
    assert await served.stored(instance, "raw:raw-1") == weird
    assert (await served.stored(instance, "seen:raw-1"))["body"] == weird  # bytes: not UTF-8
    assert await served.stored(instance, "raw:raw-2") == weird


# -- verifiers ------------------------------------------------------------------------------


def github(body: bytes, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": f"gh-{digest[:8]}"}


def standard(body: bytes, *, msg_id: str = "msg_s", at: float | None = None) -> dict[str, str]:
    import base64

    timestamp = str(int(time.time() if at is None else at))
    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }


def stripe(body: bytes, *, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={digest}", "Idempotency-Key": f"st-{digest[:8]}"}


@pytest.mark.parametrize(
    ("name", "sign", "stale"),
    [
        ("github", github, None),
        ("standard", standard, lambda body: standard(body, at=time.time() - 600)),
        ("stripe", stripe, lambda body: stripe(body, at=time.time() - 600)),
    ],
)
async def test_each_verifier_lets_a_good_signature_in_and_nothing_else(
    serve: Serve, name: str, sign: object, stale: object
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, name)
    body = b'{"event": "paid"}'
    signed = sign(body)  # type: ignore[operator]
    refused = {
        "tampered": (body.replace(b"paid", b"free"), signed),
        "missing": (body, {}),
    }
    if stale is not None:
        refused["stale"] = (body, stale(body))  # type: ignore[operator]
    if name == "github":
        refused["wrong secret"] = (body, github(body, secret="guess"))
    for what, (sent, headers) in refused.items():
        response = await served.client.post(
            path, content=sent, headers={**headers, "content-type": "application/json"}
        )
        assert response.status_code == 401, (what, response.text)
        error = response.json()["error"]
        assert error["code"] == "unauthorized"
        assert error["message"], what
        assert GITHUB_SECRET not in error["message"]
    assert deliveries(served, path) == []  # nothing stored, nothing queued

    response = await served.client.post(
        path, content=body, headers={**signed, "content-type": "application/json"}
    )
    assert response.status_code == 202, response.text
    await served.runtime.idle()
    [execution] = served.runtime.executions(instance, "count")
    assert execution["outcome"] == "ok"
    assert len(deliveries(served, path)) == 1


# -- sync deliveries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "status", "content_type", "body"),
    [
        ("dict", 200, "application/json", b'{"got":{"x":1},"method":"POST"}'),
        ("list", 200, "application/json", b'[1,"two",null]'),
        ("str", 200, "text/plain; charset=utf-8", "plain text, é".encode()),
        ("bytes", 200, "application/octet-stream", b"\x00\xffbytes"),
        ("none", 204, None, b""),
        ("pair", 201, "application/json", b'{"made":true}'),
        ("triple", 202, "text/csv", b"taken"),
    ],
)
async def test_a_sync_handler_s_return_value_is_the_response(
    serve: Serve, shape: str, status: int, content_type: str | None, body: bytes
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "sync")
    response = await served.client.post(f"{path}?shape={shape}", json={"x": 1})
    assert response.status_code == status
    assert response.headers.get("content-type") == content_type
    assert response.content == body
    if shape == "triple":
        assert response.headers["x-corral-test"] == "yes"
    [execution] = served.runtime.executions(instance, "reply")
    assert (execution["trigger"], execution["outcome"]) == ("webhook", "ok")


async def test_a_sync_handler_that_raises_is_a_generic_500_and_the_traceback_is_logged(
    serve: Serve,
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "sync")
    response = await served.client.post(f"{path}?shape=raise")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "handler_failed",
            "message": "the webhook's handler failed; its owner can see why in the instance's log",
        }
    }
    assert "the handler broke" not in response.text
    [execution] = served.runtime.executions(instance, "reply")
    assert execution["outcome"] == "error"
    assert execution["error"]["message"] == "the handler broke"
    assert "raise ValueError" in execution["error"]["traceback"]


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        (
            "bad_status",
            "the status of the returned (status, body) is 99; it must be from 200 to 599",
        ),
        ("bad_header", "the value of the returned header X-Split is 'a\\r\\nInjected: yes'"),
        ("not_json", "the return value cannot be sent as JSON: Object of type datetime"),
        ("int", "the return value is a int; a webhook handler returns a dict or list"),
    ],
)
async def test_a_return_value_that_is_no_response_is_a_500_and_the_log_says_why(
    serve: Serve, shape: str, reason: str
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "sync")
    response = await served.client.post(f"{path}?shape={shape}")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "handler_failed"
    assert "injected" not in response.headers
    [line] = [line for line in served.runtime.logs(instance) if "answered 500" in line]
    assert reason in line


async def test_a_sync_handler_past_the_deadline_is_504(serve: Serve) -> None:
    config = RuntimeConfig(webhooks=WebhookSettings(sync_deadline_s=0.5))
    served, instance = await hooks(serve, config)
    path = await webhook(served, instance, "sync")
    response = await served.client.post(f"{path}?shape=slow&s=30")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    [execution] = served.runtime.executions(instance, "reply")
    assert execution["outcome"] == "timeout"


async def test_a_repeated_sync_delivery_gets_the_stored_response_without_running(
    serve: Serve,
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "sync")
    headers = {"Idempotency-Key": "once"}
    first = await served.client.post(f"{path}?shape=triple", headers=headers)
    again = await served.client.post(f"{path}?shape=dict", headers=headers)
    assert (
        (again.status_code, again.content) == (first.status_code, first.content) == (202, b"taken")
    )
    assert again.headers["x-corral-test"] == "yes"
    assert await served.stored(instance, "runs:once") == 1
    assert len(served.runtime.executions(instance, "reply")) == 1


async def test_errors_are_json_and_never_5xx_for_bad_requests(serve: Serve) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "async")
    response = await served.client.post(
        path, content=b"x", headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()["error"]) == {"code", "message"}
    health = await served.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"ok": True})
    assert json.loads((await served.client.post("/healthz")).text)["error"]["code"] == (
        "method_not_allowed"
    )


# -- plugins ----------------------------------------------------------------------------------

TICKED = """
from corral import Plugin

class Ticked(Plugin):
    async def decide(self, ctx):
        await ctx.state.set("ticks", [*await ctx.state.get_or_default("ticks", []), ctx.tick])
        return "ok"
"""


async def test_a_tick_posted_to_a_plugin_s_endpoint_is_what_decide_sees(serve: Serve) -> None:
    served = await serve()
    instance = await served.install("ticked", TICKED)
    webhooks = served.runtime.services.webhooks
    [endpoint] = [w for w in webhooks.webhooks(instance) if w.kind == "tick"]
    assert endpoint.method == "on_tick"
    path = path_of(endpoint.url(webhooks.public_url))
    tick = {"price": 101.5, "symbol": "ACME", "at": [1, 2]}
    response = await served.client.post(path, json=tick)
    assert response.status_code == 202
    await served.runtime.idle()
    assert await served.stored(instance, "ticks") == [tick]
    [execution] = served.runtime.executions(instance, "on_tick")
    assert (execution["trigger"], execution["outcome"]) == ("tick", "ok")


async def test_a_repeat_while_the_first_sync_run_is_in_flight_is_409_until_it_is_stale(
    serve: Serve,
) -> None:
    served, instance = await hooks(serve)
    path = await webhook(served, instance, "sync")
    headers = {"webhook-id": "twice"}
    first = asyncio.create_task(served.client.post(f"{path}?shape=slow&s=2", headers=headers))
    # The handler's own store write is the one sign that it runs, from its sandbox.
    while not await served.stored(instance, "slow_started"):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    repeat = await served.client.post(f"{path}?shape=dict", headers=headers)
    assert repeat.status_code == 409
    assert repeat.headers["retry-after"] == "1"
    assert repeat.json()["error"]["code"] == "in_progress"

    # Twice the deadline later it counts as lost (its server gone): a repeat runs the
    # stored delivery again (one delivery, two executions), not the repeat's copy.
    served.runtime.clock.advance(21_000)
    rerun = await served.client.post(f"{path}?shape=str", headers=headers)
    assert (rerun.status_code, rerun.text) == (200, "slept")
    assert (await first).text == "slept"
    assert await served.stored(instance, "runs:twice") == 2
