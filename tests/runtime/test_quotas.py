"""Quotas per instance, end to end (docs/store.md § Quotas): an agent in the sandbox
that writes past its store's bytes or keys, queues past its pending tasks or makes
callbacks past their quota sees ``QuotaExceeded`` saying which quota, its limit
and the use; nothing of the refused write is kept; and the instance's next
execution runs as usual. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from corral import codec
from corral.config import RuntimeConfig
from corral.quotas import Quotas
from corral.state import SqlBackend
from tests.runtime.conftest import Runtime, RuntimeFactory

HOARDER = """
from datetime import UTC, datetime, timedelta
from corral.sdk import Agent, QuotaExceeded

LATER = timedelta(hours=1)

class Hoarder(Agent):
    async def activate(self, priority):
        pass

    async def noop(self):
        pass

    async def hoard(self, count):
        written = 0
        try:
            for i in range(count):
                await self.set(f"blob-{i}", b"x" * 1000)
                written += 1
        except QuotaExceeded as exc:
            return [written, type(exc).__name__, str(exc)]
        return [written]

    async def batch(self):
        try:
            await self.store.set_many({f"batch-{i}": b"y" * 400 for i in range(3)})
        except QuotaExceeded as exc:
            return str(exc)

    async def overflow(self):
        await self.set("over", b"z" * 5000)  # not caught: the execution fails with it

    async def note(self, text):
        await self.set("note", text)
        return await self.get("note")

    async def fan_out(self, count):
        later = datetime.now(UTC) + LATER
        queued = 0
        try:
            for i in range(count):
                if i % 3 == 0:
                    await self.run_task(self.noop, run_at=later)
                elif i % 3 == 1:
                    await self.schedule_task(f"key-{i}", self.noop, later)
                else:
                    await self.schedule_recurring(f"every-{i}", self.noop, 60_000)
                queued += 1
        except QuotaExceeded as exc:
            return [queued, str(exc)]
        return [queued]

    async def make_room(self):
        later = datetime.now(UTC) + LATER
        # Keys it has: replacing their tasks adds none.
        await self.schedule_task("key-1", self.noop, later + LATER)
        await self.schedule_recurring("every-2", self.noop, 120_000)
        await self.cancel_scheduled_task("key-4")
        await self.run_task(self.noop, run_at=later)
        return "queued"

    async def make_callbacks(self, count):
        made = []
        try:
            for i in range(count):
                made.append(await self.callback(self.noop, i))
        except QuotaExceeded as exc:
            await self.set("callbacks", made)
            return [len(made), str(exc)]
        return [len(made)]

    async def swap_callback(self):
        made = await self.get("callbacks")
        await self.delete_callback(made[0])
        return await self.run(await self.callback(self.noop))
"""

QUOTAS = Quotas(store_bytes=10_000, store_keys=12, pending_tasks=5, callbacks=3)


async def started(runtime_factory: RuntimeFactory) -> tuple[Runtime, str]:
    runtime: Runtime = await runtime_factory(RuntimeConfig(quotas=QUOTAS))
    await runtime.deploy("hoarder", HOARDER)
    instance = runtime.install("hoarder").id
    await runtime.idle()  # activate
    return runtime, instance


async def execute(runtime: Runtime, instance: str, method: str, *args: Any) -> dict[str, Any]:
    """Run one task of ``method`` now; its execution record."""
    executor = runtime.executor
    runtime.clock.advance(1)  # records are told apart by when they started
    executor.queue.enqueue(instance, method, codec.encode(list(args)), now=executor.now())
    await runtime.idle()
    record: dict[str, Any] = runtime.executions(instance, method)[-1]
    return record


async def test_an_agent_writing_past_its_store_quota_is_refused_and_runs_on(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime, instance = await started(runtime_factory)
    store = runtime.store(instance)

    # Rows of "blob-N" and 1,003 encoded bytes: the tenth would take 9,081 to 10,090.
    record = await execute(runtime, instance, "hoard", 20)
    assert record["outcome"] == "ok"
    assert record["result"] == [
        9,
        "QuotaExceeded",
        "this instance's store would hold 10,090 bytes, over its 10,000-byte quota (9.8 KiB): "
        "delete keys or store less (nothing was written)",
    ]
    assert await store.keys() == [f"blob-{i}" for i in range(9)]

    # A batch that would cross it writes none of its pairs.
    record = await execute(runtime, instance, "batch")
    assert record["result"].startswith("this instance's store would hold 10,311 bytes, over")
    assert await store.keys("batch-") == []

    # Not caught: the execution fails with it, recorded as such.
    record = await execute(runtime, instance, "overflow")
    assert record["outcome"] == "error"
    assert record["error"]["type"] == "QuotaExceeded"
    assert "would hold 14,088 bytes, over its 10,000-byte quota" in record["error"]["message"]
    assert await store.get("over") is None

    # The next execution runs as usual, and what fits is written.
    record = await execute(runtime, instance, "note", "still here")
    assert (record["outcome"], record["result"]) == ("ok", "still here")
    assert len(await store.keys()) == 10


async def test_the_store_key_quota(runtime_factory: RuntimeFactory) -> None:
    runtime: Runtime = await runtime_factory(
        RuntimeConfig(quotas=Quotas(store_bytes=10**6, store_keys=4))
    )
    await runtime.deploy("hoarder", HOARDER)
    instance = runtime.install("hoarder").id
    record = await execute(runtime, instance, "hoard", 6)
    assert record["result"] == [
        4,
        "QuotaExceeded",
        "this instance's store would hold 5 keys, over its 4-key quota: "
        "delete keys or store less (nothing was written)",
    ]


async def test_an_agent_queueing_past_its_pending_tasks_quota_is_refused(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime, instance = await started(runtime_factory)
    record = await execute(runtime, instance, "fan_out", 9)
    assert record["result"] == [
        5,
        "this instance has 5 pending tasks (queued or scheduled, not yet running), and its "
        "quota is 5: cancel some or let them run before adding more (nothing was queued)",
    ]
    pending = runtime.tasks(instance)
    assert len(pending) == 5
    assert sorted(t.key for t in pending if t.key) == ["every-2", "key-1", "key-4"]

    # Replacing a schedule it has adds nothing; after a cancel, there is room again.
    record = await execute(runtime, instance, "make_room")
    assert (record["outcome"], record["result"]) == ("ok", "queued")
    assert len(runtime.tasks(instance)) == 5
    record = await execute(runtime, instance, "fan_out", 1)
    assert record["result"][0] == 0
    assert record["result"][1].startswith("this instance has 5 pending tasks")


async def test_an_agent_making_callbacks_past_its_quota_is_refused(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime, instance = await started(runtime_factory)
    record = await execute(runtime, instance, "make_callbacks", 5)
    assert record["result"] == [
        3,
        "this instance has 3 callbacks, and its quota is 3: delete those it no longer needs "
        "(delete_callback) before making more (nothing was made)",
    ]
    callbacks = runtime.executor.database.fetch_all(
        "SELECT count(*) FROM callbacks WHERE instance = :instance", {"instance": instance}
    )
    assert callbacks == [(3,)]
    # Deleting one makes room for the next execution's.
    record = await execute(runtime, instance, "swap_callback")
    assert record["outcome"] == "ok"


async def test_uninstalling_removes_the_instances_usage_with_its_store(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime, instance = await started(runtime_factory)
    await execute(runtime, instance, "note", "x")
    backend = SqlBackend(runtime.database)
    assert backend.usage(instance) != (0, 0)
    runtime.executor.registry.uninstall(instance, now=runtime.executor.now())
    await runtime.idle()
    assert backend.usage(instance) == (0, 0)
    rows = runtime.executor.database.fetch_all(
        "SELECT count(*) FROM state_usage WHERE scope = :scope", {"scope": instance}
    )
    assert rows == [(0,)]
