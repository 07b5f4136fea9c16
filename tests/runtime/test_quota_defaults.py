"""The floods of the attack run (issue 14, finding 6) meet the default quotas.

There, one execution wrote 177 MiB to its store with 30 requests, and another
queued 900 tasks; nothing stopped either. With the default quotas (64 MiB of
store, 1,000 pending tasks), the same agent is told ``QuotaExceeded`` at the
quota, what it was refused is not kept, and the instance goes on running. The
agent only catches ``Exception``, so this file runs on a Corral without quotas
too, where it shows the floods getting through.
"""

from __future__ import annotations

from corral import codec
from tests.runtime.conftest import Runtime

FLOOD = """
from datetime import UTC, datetime, timedelta
from corral.sdk import Agent

class Flood(Agent):
    async def activate(self, priority):
        pass

    async def noop(self):
        pass

    async def fill(self, count):
        written = 0
        try:
            for i in range(count):
                await self.set(f"big-{i:02d}", b"x" * 1_000_000)
                written += 1
        except Exception as exc:
            return [written, type(exc).__name__, str(exc)]
        return [written]

    async def fan_out(self, count):
        later = datetime.now(UTC) + timedelta(hours=1)
        queued = 0
        try:
            for _ in range(count):
                await self.run_task(self.noop, run_at=later)
                queued += 1
        except Exception as exc:
            return [queued, type(exc).__name__, str(exc)]
        return [queued]

    async def ping(self):
        return "pong"
"""


async def run(runtime: Runtime, instance: str, method: str, *args: object) -> object:
    runtime.clock.advance(1)  # records are told apart by when they started
    executor = runtime.executor
    executor.queue.enqueue(instance, method, codec.encode(list(args)), now=executor.now())
    await runtime.idle()
    record = runtime.executions(instance, method)[-1]
    assert record["outcome"] == "ok", record["error"]
    return record["result"]


async def test_a_store_flood_stops_at_the_default_64_mib(runtime: Runtime) -> None:
    await runtime.deploy("flood", FLOOD)
    instance = runtime.install("flood").id
    # Rows of a 6-byte key and a 1,000,005-byte encoded value: 67 fit in 64 MiB.
    assert await run(runtime, instance, "fill", 80) == [
        67,
        "QuotaExceeded",
        "this instance's store would hold 68,000,748 bytes, over its 67,108,864-byte quota "
        "(64 MiB): delete keys or store less (nothing was written)",
    ]
    store = runtime.store(instance)
    assert await store.keys() == [f"big-{i:02d}" for i in range(67)]
    assert await run(runtime, instance, "ping") == "pong"


async def test_a_task_flood_stops_at_the_default_1000_pending(runtime: Runtime) -> None:
    await runtime.deploy("flood", FLOOD)
    instance = runtime.install("flood").id
    assert await run(runtime, instance, "fan_out", 600) == [600]
    assert await run(runtime, instance, "fan_out", 600) == [
        400,
        "QuotaExceeded",
        "this instance has 1,000 pending tasks (queued or scheduled, not yet running), and its "
        "quota is 1,000: cancel some or let them run before adding more (nothing was queued)",
    ]
    assert len(runtime.tasks(instance)) == 1_000
    assert await run(runtime, instance, "ping") == "pong"
