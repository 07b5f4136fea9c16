"""The worker loop itself: stopping it."""

from __future__ import annotations

import asyncio

from tests.runtime.conftest import RuntimeFactory, stop


async def test_a_worker_stops_when_cancelled_as_it_is_woken(
    runtime_factory: RuntimeFactory,
) -> None:
    # A long poll, so that nothing but the test wakes the loop while it waits.
    runtime = await runtime_factory(poll_s=60)
    runner = asyncio.create_task(runtime.worker.run())
    wake = runtime.worker._wake
    for _ in range(500):  # until the loop waits on its wake-up event (bounded)
        if wake.sleeping:
            break
        await asyncio.sleep(0.01)
    assert wake.sleeping, "the worker never waited for work"

    runtime.worker.wake()  # e.g. an execution just finished
    runner.cancel()
    await asyncio.wait({runner}, timeout=0.5)
    stopped = runner.done()
    await stop(runner)
    assert stopped, "Worker.run was still serving 0.5 s after it was cancelled"
