"""Per-instance execution rate limits auto-suspend the instance (SPEC §1.6).

Past the limit its tasks stop running, its status says why and a log line does
too; the next deploy of the agent, even of identical code, lifts the suspension.
"""

from __future__ import annotations

import asyncio

from corral import codec
from corral.config import RateLimits, RuntimeConfig
from tests.runtime.conftest import Runtime, RuntimeFactory, stop
from tests.support import FakeClock

LIMITED = RuntimeConfig(rate_limits=RateLimits(per_5min=5))

FAN_OUT = """
from corral.sdk import Agent

class Busy(Agent):
    async def activate(self, priority):
        for i in range(8):
            await self.run_task(await self.callback(self.work, i))

    async def work(self, i):
        await self.set(f"done:{i}", True)
"""

REASON = (
    "auto-suspended: 5 executions in the last 5 minutes (limit 5); the next deploy of busy lifts it"
)


async def _suspended(runtime: Runtime) -> str:
    """Install the fan-out and run until the limit stops it; returns the instance id.

    The runtimes here run one execution at a time: the limit is checked before each
    execution starts, so with several at once a few more may start before one of
    the checks sees the count (a soft limit, by up to the worker's concurrency).
    """
    await runtime.deploy("busy", FAN_OUT)
    instance = runtime.install("busy")
    await runtime.settle()
    return instance.id


async def test_the_sixth_execution_in_the_window_suspends_the_instance(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = await runtime_factory(LIMITED, concurrency=1)
    instance = await _suspended(runtime)

    records = runtime.executions(instance)
    assert len(records) == 5  # activate and four of the eight tasks
    assert sorted(r["method"] for r in records) == ["activate"] + ["work"] * 4
    assert runtime.status(instance) == ("suspended", REASON)
    assert REASON in runtime.logs(instance)
    pending = runtime.tasks(instance)
    assert len(pending) == 4
    assert all(t.state == "queued" for t in pending)
    # Put back without spending an attempt, so the tasks are intact when it is lifted.
    assert all(t.attempts == 0 for t in pending)
    assert len(await runtime.store(instance).keys("done:")) == 4

    # Nothing runs while it is suspended, though its tasks are due.
    runtime.clock.advance(60_000)
    await runtime.settle()
    assert len(runtime.executions(instance)) == 5
    assert runtime.status(instance)[0] == "suspended"
    assert runtime.logs(instance).count(REASON) == 1

    # The limit is per instance: another instance of the agent runs its own five
    # executions, then is suspended in its turn; the first's count is unchanged.
    second = runtime.install("busy")
    await runtime.settle()
    assert len(runtime.executions(second.id)) == 5
    assert runtime.status(second.id)[0] == "suspended"
    assert len(runtime.executions(instance)) == 5

    # A deploy of identical code makes no new version but lifts the suspension.
    deployed = await runtime.deploy("busy", FAN_OUT)
    assert not deployed.created
    assert runtime.status(instance) == ("active", None)
    assert runtime.status(second.id) == ("active", None)


async def test_after_a_deploy_lifts_the_suspension_the_tasks_run(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = await runtime_factory(LIMITED, concurrency=1)
    instance = await _suspended(runtime)
    await runtime.deploy("busy", FAN_OUT)
    assert runtime.status(instance) == ("active", None)  # lifted...
    await runtime.settle()
    assert runtime.status(instance) == ("active", None)  # ...and not re-imposed at once
    assert len(await runtime.store(instance).keys("done:")) == 8
    assert runtime.tasks(instance) == []


async def test_the_rate_window_rolls_with_the_workers_clock(
    runtime_factory: RuntimeFactory,
) -> None:
    # A clock well behind the wall clock: the window must be measured in its time.
    runtime = await runtime_factory(LIMITED, concurrency=1, clock=FakeClock())
    await runtime.deploy("busy", FAN_OUT.replace("range(8)", "range(4)"))
    instance = runtime.install("busy").id
    await runtime.settle()
    assert len(runtime.executions(instance)) == 5  # up to the limit, not past it
    assert runtime.status(instance) == ("active", None)

    runtime.clock.advance(301_000)  # those five are now out of the window
    for i in range(4, 8):
        runtime.executor.queue.enqueue(
            instance, "work", codec.encode([i]), now=runtime.executor.now()
        )
    await runtime.settle()
    assert runtime.status(instance) == ("active", None)
    assert len(await runtime.store(instance).keys("done:")) == 8


async def test_until_idle_returns_while_a_suspended_instance_has_due_tasks(
    runtime_factory: RuntimeFactory,
) -> None:
    runtime = await runtime_factory(LIMITED, concurrency=1)
    instance = await _suspended(runtime)
    assert runtime.status(instance)[0] == "suspended"
    assert len(runtime.tasks(instance)) == 4  # due now, but no worker may claim them
    # Nothing can run, so this should return at once; it polls forever instead.
    runner = asyncio.create_task(runtime.worker.run(until_idle=True))
    await asyncio.wait({runner}, timeout=1)
    returned = runner.done()
    await stop(runner)
    assert returned, "run(until_idle=True) was still serving after 1 s"
