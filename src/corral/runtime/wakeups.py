"""What wakes an idle worker: its ``Wakeup``, and PostgreSQL LISTEN, so that it
claims work another process enqueued at once.

Migration 0003 makes every inserting statement on ``tasks`` notify channel
``corral_tasks`` when it commits. Without this, work enqueued by the CLI, a
webhook or another worker waits for the next poll. The listener is only a
shortcut: if its connection fails, the worker says so once and keeps polling,
and the listener tries again after capped exponential delays (the worker's
``reconnect`` backoff), saying so once more when it listens again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from corral.db.errors import gist
from corral.db.raw import Database
from corral.tasks.queue import Backoff

log = logging.getLogger("corral.wakeups")

CHANNEL = "corral_tasks"


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


async def listen(database: Database, wake: Callable[[], None], *, backoff: Backoff) -> None:
    """Call ``wake`` on every notification until cancelled."""
    url = database.engine.url.set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    failures = 0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if failures:
                    log.warning("listening for new tasks again")
                failures = 0
                wake()  # whatever was enqueued before the LISTEN took effect
                await _heard(conn.pgconn, wake)
        except psycopg.Error as exc:
            if not failures:
                log.warning(
                    "not listening for new tasks (%s); polling instead until it listens again",
                    gist(exc),
                )
            failures += 1
        await asyncio.sleep(backoff.delay_ms(failures) / 1000)


async def _heard(pgconn: psycopg.pq.abc.PGconn, wake: Callable[[], None]) -> None:
    """Call ``wake`` from the socket's own callback when notifications come in; raise
    when the connection fails.

    Read straight off libpq: psycopg's ``notifies()`` generator cost several loop
    iterations and selector changes per notification, on the path of every task
    another process enqueues for an idle worker.
    """
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            pgconn.consume_input()
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError(pgconn.get_error_message() or "connection lost")
        except psycopg.Error as exc:
            if not lost.done():
                lost.set_exception(exc)
            return
        heard = False
        while pgconn.notifies() is not None:
            heard = True
        if heard:
            wake()

    # The descriptor, not ``pgconn.socket`` again at the end: on a lost connection
    # that raises, and the reader would stay registered for whatever connection
    # gets the number next (a worker's session, whose own wait then fails).
    fd = pgconn.socket
    loop.add_reader(fd, readable)
    try:
        await lost
    finally:
        loop.remove_reader(fd)
