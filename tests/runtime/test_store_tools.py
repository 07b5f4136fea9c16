"""Every store method an agent calls (SPEC §1.1), from the sandbox, on each database.

The store's own behaviour is tested on the host (tests/state/); here each method
goes the way an agent's does: through the SDK, over the sandbox channel, into the
worker's store for the instance, one request each.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from corral import codec
from corral.sdk.operations import Op
from corral.tagged_json import to_tagged
from tests.runtime.conftest import Runtime

KEEPER = """
from decimal import Decimal
from corral.sdk import Agent

class Keeper(Agent):
    async def activate(self, priority):
        pass

    async def write(self):
        await self.store.set("a", {"n": 1, "at": Decimal("1.5")})
        await self.store.set_many({"b:1": (1, 2), "b:2": {3}, "c": "gone soon"})
        await self.store.set_with_ttl("ttl", "brief", 60_000)
        return [
            await self.store.get("a"),
            await self.store.get_or_default("missing", "fallback"),
            await self.store.has("c"),
            await self.store.get_many(["b:1", "missing", "b:2"]),
            await self.store.keys("b:"),
            await self.store.list_entries("b:"),
            await self.store.acquire_lock("lock", 60_000),
            await self.store.acquire_lock("lock", 60_000),  # held: not again
        ]

    async def rewrite(self):
        await self.store.delete("c")
        await self.store.delete("c")  # absent: no error
        await self.store.clear_many(["b:1", "missing"])
        await self.store.release_lock("lock")
        return [
            await self.store.keys(),
            await self.store.has("ttl"),  # expired
            await self.store.acquire_lock("lock", 60_000),  # released: free again
        ]

    async def wipe(self):
        await self.store.clear_all()
        return await self.store.keys()
"""


async def step(runtime: Runtime, instance: str, method: str) -> tuple[object, int]:
    runtime.executor.queue.enqueue(instance, method, codec.encode([]), now=runtime.executor.now())
    await runtime.idle()
    [record] = runtime.executions(instance, method)
    assert record["outcome"] == "ok", record["error"]
    return record["result"], record["requests_used"]


@pytest.mark.exercises(
    Op.STORE_GET,
    Op.STORE_GET_MANY,
    Op.STORE_HAS,
    Op.STORE_KEYS,
    Op.STORE_LIST_ENTRIES,
    Op.STORE_SET,
    Op.STORE_SET_WITH_TTL,
    Op.STORE_SET_MANY,
    Op.STORE_DELETE,
    Op.STORE_CLEAR_MANY,
    Op.STORE_CLEAR_ALL,
    Op.STORE_ACQUIRE_LOCK,
    Op.STORE_RELEASE_LOCK,
)
async def test_every_store_method_works_from_the_sandbox(runtime: Runtime) -> None:
    await runtime.deploy("keeper", KEEPER)
    instance, bystander = runtime.install("keeper").id, runtime.install("keeper").id
    await runtime.store(bystander).set("theirs", 1)

    written = [
        {"n": 1, "at": Decimal("1.5")},
        "fallback",
        True,
        [(1, 2), None, {3}],
        ["b:1", "b:2"],
        [("b:1", (1, 2)), ("b:2", {3})],
        True,
        False,
    ]
    # A record keeps the result with its types tagged (docs: corral executions --json).
    assert await step(runtime, instance, "write") == (to_tagged(written), 3 + 8)
    runtime.clock.advance(int(timedelta(minutes=2) / timedelta(milliseconds=1)))
    assert await step(runtime, instance, "rewrite") == ([["a", "b:2"], False, True], 4 + 3)
    assert await step(runtime, instance, "wipe") == ([], 2)
    assert await runtime.store(bystander).keys() == ["theirs"]
