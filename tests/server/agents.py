"""The agent the server's tests post to, and its webhooks (``WEBHOOKS``: name → how the
test makes it: the method, its extra argument, and ``create``'s options)."""

from __future__ import annotations

from corral.runtime.webhooks import Webhook, Webhooks
from corral.webhooks import GitHubSignature, StandardWebhooks, StripeSignature
from tests.support import make_webhook

#: GitHub's secret of the signed webhooks (a test value: the tests sign with it).
GITHUB_SECRET = "it's-a-secret-to-everybody"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_SECRET = "whsec_stripe_test_secret"

HOOKS = r"""
import asyncio
from datetime import datetime

from corral import Agent


class Hooks(Agent):
    limits = {"timeout_s": 30}

    async def count(self, request, source):
        key = f"runs:{request.delivery_id}"
        await self.store.set_many({
            key: await self.store.get_or_default(key, 0) + 1,
            f"raw:{request.delivery_id}": request.raw_body,
            f"seen:{request.delivery_id}": {
                "source": source,
                "method": request.method,
                "body": request.body,
                "params": request.params.pairs,
                "event": request.headers.get("X-Event"),
            },
        })

    async def reply(self, request):
        key = f"runs:{request.delivery_id}"
        await self.store.set(key, await self.store.get_or_default(key, 0) + 1)
        shape = request.params.get("shape")
        if shape == "dict":
            # Sendable for any body (bytes as hex): the fuzz posts anything here, and only
            # Corral itself may answer it with a 5xx.
            body = request.body.hex() if isinstance(request.body, bytes) else request.body
            return {"got": body, "method": request.method}
        if shape == "list":
            return [1, "two", None]
        if shape == "str":
            return "plain text, é"
        if shape == "bytes":
            return b"\x00\xffbytes"
        if shape == "none":
            return None
        if shape == "pair":
            return (201, {"made": True})
        if shape == "triple":
            return (202, "taken", {"X-Corral-Test": "yes", "Content-Type": "text/csv"})
        if shape == "raise":
            raise ValueError("the handler broke")
        if shape == "slow":
            await self.store.set("slow_started", True)
            await self.store.set(f"slow_started:{request.delivery_id}", True)
            await asyncio.sleep(float(request.params.get("s", "60")))
            return "slept"
        if shape == "bad_status":
            return (99, "too low")
        if shape == "bad_header":
            return (200, "x", {"X-Split": "a\r\nInjected: yes"})
        if shape == "not_json":
            return {"when": datetime(2026, 1, 1)}
        if shape == "int":
            return 42
        return {"shape": shape}
"""


WEBHOOKS: dict[str, tuple[str, list[object], dict[str, object]]] = {
    "async": ("count", ["extra"], {}),
    "sync": ("reply", [], {"mode": "sync"}),
    "small": ("count", ["small"], {"max_body_bytes": 100}),
    "github": ("count", ["github"], {"verify": GitHubSignature(GITHUB_SECRET).spec()}),
    "standard": ("count", ["standard"], {"verify": StandardWebhooks(STANDARD_SECRET).spec()}),
    "stripe": ("count", ["stripe"], {"verify": StripeSignature(STRIPE_SECRET).spec()}),
}


def spec_webhook(webhooks: Webhooks, instance: str, name: str, *, now: int) -> Webhook:
    """A webhook of the instance made as ``WEBHOOKS[name]`` says."""
    method, extra, options = WEBHOOKS[name]
    return make_webhook(webhooks, instance, method, extra, now=now, **options)  # type: ignore[arg-type]
