"""What wakes an idle worker: its ``Wakeup``.

Set by whatever may have made work due: an execution's enqueue, a finished
execution, and, where the database can say so, work another process enqueued
(``TaskQueue.listen``; on PostgreSQL, LISTEN). Without that, work enqueued by
the CLI, a webhook or another worker waits for the next poll.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    """What the worker loop sleeps on between rounds: set by whatever may have made
    work due (an enqueue here, a notification, a finished execution), or the poll.

    ``asyncio.wait_for(event.wait(), timeout)`` made a task and three loop
    iterations of every wake-up, and Python 3.11's dropped a ``cancel()`` that came
    as the event fired; this wakes the sleeper from ``set`` itself.
    """

    def __init__(self) -> None:
        self._set = False
        self._sleeper: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    @property
    def sleeping(self) -> bool:
        """Whether the loop waits for this now."""
        return self._sleeper is not None

    async def wait(self, timeout_s: float) -> None:
        """Return once set, or after ``timeout_s``."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        sleeper = self._sleeper = loop.create_future()
        timer = loop.call_later(timeout_s, _wake_up, sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleeper = None


def _wake_up(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)
