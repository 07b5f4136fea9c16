"""``self.tools.network``: what the client sends for each call, and what it refuses.

The host answers these operations (and checks every argument again); here the
channel only records what the agent would send, which is what the host receives
(a real sandboxed execution sends the same: tests/sandbox/test_webhook_delivery.py).
A refused call must send nothing.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from corral import Agent, codec
from corral.sdk.operations import Op
from corral.webhooks import GitHubSignature, StripeSignature

URL = "http://127.0.0.1:8000/hooks/tok"


class Recorder:
    """A ToolChannel that records each call and answers with a canned reply."""

    requests_left = 1000
    time_left_ms = 1000
    cpu_left_ms = 1000

    def __init__(self, reply: Any = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.reply = reply

    async def call(self, op: str, *args: Any) -> Any:
        self.calls.append((op, args))
        return self.reply


class Hooks(Agent):
    async def on_issue(self, request: Any, repo: str = "") -> None:
        pass


async def test_create_sends_the_target_encoded_args_mode_spec_and_cap() -> None:
    channel = Recorder(URL)
    agent = Hooks(channel)
    verifier = GitHubSignature("s3cret")
    url = await agent.tools.network.create_webhook(
        agent.on_issue, "acme/app", {"n": 1}, mode="sync", verify=verifier, max_body_bytes=4096
    )
    assert url == URL
    [(op, args)] = channel.calls
    assert op == Op.WEBHOOK_CREATE
    assert args == (
        ["method", "on_issue"],
        codec.encode(["acme/app", {"n": 1}]),
        "sync",
        verifier.spec(),
        4096,
    )


async def test_create_defaults_and_callback_tokens() -> None:
    channel = Recorder(URL)
    agent = Hooks(channel)
    await agent.tools.network.create_webhook(agent.on_issue)
    await agent.tools.network.create_webhook("cb_token_123")  # a str is a callback's token
    assert [args for _, args in channel.calls] == [
        (["method", "on_issue"], codec.encode([]), "async", None, None),
        ("cb_token_123", codec.encode([]), "async", None, None),
    ]


class MyGitHub(GitHubSignature):
    def verify(self, request: Any, *, now: float | None = None) -> None:
        pass


class Other(Agent):
    async def elsewhere(self, request: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda a: a.tools.network.create_webhook(a.on_issue, mode="fast"),
            ValueError,
            "mode must be 'async' or 'sync'; got 'fast'",
        ),
        (
            lambda a: a.tools.network.create_webhook(a.on_issue, verify={"scheme": "github"}),
            TypeError,
            "verify must be a verifier from corral.webhooks (StandardWebhooks, GitHubSignature, "
            "StripeSignature) or None; got dict",
        ),
        (
            lambda a: a.tools.network.create_webhook(a.on_issue, verify=GitHubSignature),
            TypeError,
            "or None; got ABCMeta",
        ),
        (
            lambda a: a.tools.network.create_webhook(a.on_issue, verify=MyGitHub("s")),
            TypeError,
            "or None; got MyGitHub: the server rebuilds the verifier from its scheme, so a "
            "subclass's own code would not run there",
        ),
        *(
            (
                lambda a, cap=cap: a.tools.network.create_webhook(a.on_issue, max_body_bytes=cap),
                ValueError,
                f"max_body_bytes must be a positive whole number of bytes or None; got {cap!r}",
            )
            for cap in (0, -1, True, 1.5, "1024")
        ),
        (
            lambda a: a.tools.network.create_webhook("cb_token_123", "extra"),
            TypeError,
            "a callback carries its own extra arguments: pass them to self.callback(...), or "
            "pass the method itself to create_webhook with them",
        ),
        (
            lambda a: a.tools.network.create_webhook(Other(Recorder()).elsewhere),
            TypeError,
            "a callback names one of this agent's own methods",
        ),
        (
            lambda a: a.tools.network.create_webhook(a.on_issue, object()),
            TypeError,
            "webhook arguments[0]: cannot store an object of type object",
        ),
        (
            lambda a: a.tools.network.delete_webhook(None),
            TypeError,
            "delete_webhook takes the webhook's URL (a str); got NoneType",
        ),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_sent(
    call: Any, error: type[Exception], message: str
) -> None:
    channel = Recorder(URL)
    with pytest.raises(error, match=re.escape(message)):
        await call(Hooks(channel))
    assert channel.calls == []


async def test_a_stripe_verifier_sends_its_tolerance() -> None:
    channel = Recorder(URL)
    agent = Hooks(channel)
    await agent.tools.network.create_webhook(
        agent.on_issue, verify=StripeSignature("whsec_x", tolerance_s=60)
    )
    [(_, args)] = channel.calls
    assert args[3]["scheme"] == "stripe"
    assert args[3]["tolerance_s"] == 60


async def test_delete_and_list() -> None:
    listed = [{"url": URL, "method": "on_issue", "mode": "async", "created_at": 1}]
    channel = Recorder(listed)
    agent = Hooks(channel)
    await agent.tools.network.delete_webhook(URL)
    assert await agent.tools.network.list_webhooks() == listed
    assert channel.calls == [(Op.WEBHOOK_DELETE, (URL,)), (Op.WEBHOOK_LIST, ())]
