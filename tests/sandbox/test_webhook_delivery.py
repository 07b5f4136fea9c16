"""A webhook delivery through a real sandboxed execution: what its handler gets.

The host passes the delivery as ``request_wire`` and ``delivery="request"`` (a
handler's ``WebhookRequest``) or ``"body"`` (a plugin's posted tick: the parsed
body); the sandbox builds the object, so these tests run the agent's own code
on it and look at what it saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral import codec
from corral.runtime.tools import store_tools
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.pool import SandboxPool
from corral.sandbox.process import Delivery
from corral.sandbox.zygote import Zygote
from corral.sdk.operations import Op
from corral.sdk.webhooks import request_wire
from corral.state import open_store
from corral.webhooks import GitHubSignature

AGENT = """
from corral import Agent
from corral.webhooks import GitHubSignature, WebhookRequest, WebhookVerificationError

class Hooks(Agent):
    async def on_hook(self, request, label="none"):
        assert isinstance(request, WebhookRequest), type(request)
        return {
            "method": request.method,
            "event": request.headers["X-GITHUB-EVENT"],
            "event_lower": request.headers.get("x-github-event"),
            "cookies": request.headers.get_all("set-cookie"),
            "tags": request.params.get_all("tag"),
            "page": request.params["page"],
            "body": request.body,
            "raw": request.raw_body,
            "delivery_id": request.delivery_id,
            "received_at": request.received_at.isoformat(),
            "label": label,
        }

    def tick(self, payload):
        return {"payload": payload}

    async def make_hooks(self):
        url = await self.tools.network.create_webhook(
            self.on_hook, "acme", mode="sync", verify=GitHubSignature("s3"), max_body_bytes=512
        )
        await self.tools.network.delete_webhook(url)
        return await self.tools.network.list_webhooks()

    def check(self, request, secret):
        try:
            GitHubSignature(secret).verify(request)
        except WebhookVerificationError as exc:
            return str(exc)
        return "genuine"
"""

RECEIVED_MS = 1_765_000_000_123


def wire(raw: bytes, content_type: str = "application/json", **changes: Any) -> dict[str, Any]:
    return (
        request_wire(
            method="POST",
            headers=[
                ("Content-Type", content_type),
                ("X-GitHub-Event", "issues"),
                ("Set-Cookie", "a=1"),
                ("set-cookie", "b=2"),
            ],
            query="tag=x&page=3&tag=y",
            body=raw,
            delivery_id="dl_0123456789abcdef",
            received_at_ms=RECEIVED_MS,
        )
        | changes
    )


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    zygote = await Zygote.start()
    pool = SandboxPool(zygote)
    yield pool
    await pool.close()
    await zygote.close()


async def deliver(
    pool: SandboxPool, method: str, args: list[Any], delivery: Delivery | None
) -> ExecutionResult:
    tools = store_tools(open_store(None, "inst-hooks"))
    return await pool.execute(
        "inst-hooks", "v1", AGENT, method, args, Limits(), tools, delivery=delivery
    )


async def test_a_handler_gets_the_request_with_its_extra_args(pool: SandboxPool) -> None:
    body = b'{"action": "opened", "issue": {"number": 7}}'
    result = await deliver(pool, "on_hook", [wire(body), "extra"], "request")
    assert result.outcome is Outcome.OK, result.error
    assert result.result == {
        "method": "POST",
        "event": "issues",
        "event_lower": "issues",
        "cookies": ["a=1", "b=2"],
        "tags": ["x", "y"],
        "page": "3",
        "body": {"action": "opened", "issue": {"number": 7}},
        "raw": body,
        "delivery_id": "dl_0123456789abcdef",
        "received_at": "2025-12-06T05:46:40.123000+00:00",
        "label": "extra",
    }


async def test_raw_body_is_byte_exact_and_a_non_utf8_body_stays_bytes(pool: SandboxPool) -> None:
    body = b"\xff\xfe  spaced \r\n\x00 tail  "
    result = await deliver(pool, "on_hook", [wire(body, "application/octet-stream")], "request")
    assert result.outcome is Outcome.OK, result.error
    assert result.result["raw"] == body
    assert result.result["body"] == body  # not UTF-8: bytes, not a mangled str

    text = " héllo\n".encode()
    result = await deliver(pool, "on_hook", [wire(text, "text/plain")], "request")
    assert result.result["body"] == " héllo\n"
    assert result.result["raw"] == text


async def test_agent_code_verifies_a_signature_itself_with_corral_webhooks(
    pool: SandboxPool,
) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    signed = wire(body) | {"headers": [["X-Hub-Signature-256", GitHubSignature("s3").sign(body)]]}
    result = await deliver(pool, "check", [signed, "s3"], "request")
    assert result.result == "genuine"
    result = await deliver(pool, "check", [signed, "not-s3"], "request")
    assert result.result == (
        "the X-Hub-Signature-256 signature does not match: the body was changed, or the "
        "webhook's secret is not the one set in GitHub"
    )


async def test_the_network_tools_send_the_wire_the_host_expects(pool: SandboxPool) -> None:
    received: list[tuple[str, list[Any]]] = []
    listed = [{"url": "http://h/hooks/t", "method": "on_hook", "mode": "sync", "created_at": 5}]

    def host(op: str, args: list[Any]) -> Any:
        received.append((op, args))
        return {Op.WEBHOOK_CREATE: "http://h/hooks/t", Op.WEBHOOK_LIST: listed}.get(Op(op))

    result = await pool.execute("inst-hooks", "v1", AGENT, "make_hooks", [], Limits(), host)
    assert result.outcome is Outcome.OK, result.error
    assert result.result == listed
    assert received == [
        (
            Op.WEBHOOK_CREATE,
            [
                ["method", "on_hook"],
                codec.encode(["acme"]),
                "sync",
                GitHubSignature("s3").spec(),
                512,
            ],
        ),
        (Op.WEBHOOK_DELETE, ["http://h/hooks/t"]),
        (Op.WEBHOOK_LIST, []),
    ]
    assert result.requests_used == 3


async def test_a_plugin_tick_gets_the_parsed_body(pool: SandboxPool) -> None:
    result = await deliver(pool, "tick", [wire(b'{"price": 101.5}')], "body")
    assert result.result == {"payload": {"price": 101.5}}
    result = await deliver(pool, "tick", [wire(b"", "text/plain")], "body")
    assert result.result == {"payload": ""}


async def test_an_unknown_delivery_kind_is_refused(pool: SandboxPool) -> None:
    result = await deliver(pool, "tick", [wire(b"[1]")], "headers")  # type: ignore[arg-type]
    assert result.error is not None
    assert result.error["type"] == "ProtocolError"
    assert "unknown kind 'headers'" in result.error["message"]


async def test_without_the_flag_the_wire_dict_is_passed_as_it_is(pool: SandboxPool) -> None:
    result = await deliver(pool, "tick", [{"plain": "dict"}], None)
    assert result.result == {"payload": {"plain": "dict"}}


async def test_a_json_body_that_does_not_parse_fails_the_execution(pool: SandboxPool) -> None:
    result = await deliver(pool, "on_hook", [wire(b'{"broken": ')], "request")
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error["type"] == "WebhookBodyError"
    assert "the body is not valid JSON although its Content-Type" in result.error["message"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([], "no request in front of the arguments"),
        (["not a dict"], "a webhook request's wire form is a dict, not str"),
        ([{"method": "POST"}], "a webhook request's wire form has no 'headers'"),
        ([wire(b"{}", body="text")], "a webhook request's wire form has 'body' of type str"),
        ([wire(b"{}", headers=[["only-a-name"]])], "a header that is not a [name, value] pair"),
        ([wire(b"{}", received_at=10**20)], "'received_at' out of range"),
    ],
)
async def test_a_malformed_delivery_fails_clearly_and_the_process_serves_on(
    pool: SandboxPool, args: list[Any], reason: str
) -> None:
    result = await deliver(pool, "on_hook", args, "request")
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error["type"] == "ProtocolError"
    assert reason in result.error["message"]
    assert result.error["message"].startswith("the host sent a malformed webhook delivery (")
    assert result.error["message"].endswith("this is a bug in Corral, not in the agent")
    again = await deliver(pool, "tick", [wire(b"[1]")], "body")
    assert again.result == {"payload": [1]}
    assert pool.spawned == 1  # the child did not crash: the same warm process served on
