"""A claimed task is leased for as long as its execution may run, and no longer.

Recovery takes back the rows whose lease ran out (their worker is presumed dead);
an agent that raises its own ``timeout_s`` must keep its row that long, or a
healthy execution would be run a second time beside itself.
"""

from __future__ import annotations

import pytest

from corral import codec
from corral.config import RuntimeConfig
from corral.sandbox.limits import Limits
from corral.tasks.queue import NO_ARGS
from tests.runtime.conftest import Runtime, RuntimeFactory

AGENT = """
from corral.sdk import Agent

class Patient(Agent):
    limits = {{"timeout_s": {timeout_s}}}

    def work(self):
        return "done"
"""


async def _claimed_work(runtime: Runtime, timeout_s: float) -> int:
    """Deploy with ``timeout_s``, claim one ``work`` task; the claim's time (ms)."""
    await runtime.deploy("patient", AGENT.format(timeout_s=timeout_s))
    instance = runtime.install("patient")
    await runtime.idle()  # activate
    executor = runtime.executor
    executor.queue.enqueue(instance.id, "work", codec.encode([]), now=executor.now())
    claimed_at = executor.now()
    [claim] = await runtime.worker.claim(1)
    assert claim.task.method == "work"
    return claimed_at


async def test_a_longer_agent_timeout_keeps_the_task_leased_that_long(runtime: Runtime) -> None:
    timeout_s = 600
    claimed_at = await _claimed_work(runtime, timeout_s)
    executor = runtime.executor
    grace_ms = executor.config.lease_grace_s * 1000
    past_default_lease = claimed_at + executor.lease_ms + 1
    assert executor.queue.recover(past_default_lease) == 0  # still running, still leased
    assert executor.queue.recover(claimed_at + timeout_s * 1000 + grace_ms + 1) == 1


async def test_a_default_timeout_lease_ends_after_the_default(runtime: Runtime) -> None:
    claimed_at = await _claimed_work(runtime, 30)
    executor = runtime.executor
    assert executor.queue.recover(claimed_at + executor.lease_ms + 1) == 1


async def test_the_longest_lease_a_configuration_allows_fits_the_database(
    runtime_factory: RuntimeFactory,
) -> None:
    """A day's timeout and an hour's grace, the most either may be, on either backend."""
    most = Limits(requests=1_000_000, timeout_s=86_400, cpu_s=86_400, memory_mb=1 << 20)
    runtime: Runtime = await runtime_factory(
        RuntimeConfig(limits=most, ceilings=most, lease_grace_s=3600)
    )
    claimed_at = await _claimed_work(runtime, 30)
    executor = runtime.executor
    assert executor.lease_ms == 90_000_000
    assert executor.queue.recover(claimed_at + 90_000_000) == 0
    assert executor.queue.recover(claimed_at + 90_000_001) == 1


@pytest.mark.parametrize("put_back", ["recovered", "released"])
async def test_a_keyed_task_put_back_after_its_key_was_taken_again_waits_without_it(
    runtime: Runtime, put_back: str
) -> None:
    """A key is free once its task runs, so the run may schedule its key again; when the
    task is then put back (its worker died, or its instance was over its rate), both
    wait, and the key stays the newer task's: one key holds one pending task."""
    await runtime.deploy("patient", AGENT.format(timeout_s=30))
    instance = runtime.install("patient").id
    await runtime.idle()  # activate
    executor, now = runtime.executor, runtime.executor.now()
    executor.queue.schedule(instance, "again", "work", NO_ARGS, run_at=now, now=now)
    [claim] = await runtime.worker.claim(1)
    assert claim.task.key == "again"
    executor.queue.schedule(instance, "again", "work", NO_ARGS, run_at=now + 60_000, now=now)
    if put_back == "recovered":
        assert executor.queue.recover(now + executor.lease_ms + 1) == 1
    else:
        executor.queue.release(claim.task, run_at=now)
    put, newer = sorted(runtime.tasks(instance), key=lambda task: task.id)
    assert (put.id, put.key, put.state) == (claim.task.id, None, "queued")
    assert (newer.key, newer.state, newer.run_at) == ("again", "queued", now + 60_000)
