"""``bridge.pause``: long synchronous work inside ``bridge.start`` lets the loop run."""

from __future__ import annotations

import asyncio
import time

from corral.db import bridge


async def test_long_work_that_pauses_lets_the_event_loop_run_meanwhile() -> None:
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    def long_work() -> list[int]:
        """Busy for 50 slices, pausing between its steps; what ran meanwhile.

        Slices of this thread's CPU time: each one is at least a slice on the clock,
        after which ``pause`` gives the loop a turn, however much of that time other
        processes had the core (a parallel test run). 50 slices of the clock could pass
        in a handful of turns while this process waited for a core."""
        seen = []
        end = time.thread_time() + 50 * bridge.SLICE_S
        while time.thread_time() < end:
            bridge.pause()
            seen.append(turns)
        return seen

    other = asyncio.ensure_future(other_work())
    await asyncio.sleep(0)
    done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
    bridge.start(long_work, None, done, lambda: None)
    assert not done.done()  # it gave the loop a turn
    seen = await done
    other.cancel()
    # The other work ran between the steps, not only before and after them.
    assert len(set(seen)) > 10


def test_pause_outside_a_bridged_function_does_nothing() -> None:
    bridge.pause()  # no event loop, no greenlet: returns at once
