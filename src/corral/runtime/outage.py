"""Waiting out a database outage: one line when the database is lost, one when it is back.

Whichever part of a worker meets ``DatabaseUnavailable`` first (its loop's claim,
a settlement, a rate-limit count) starts the wait and the others join it. Until
the database answers again it is probed (``Database.probe``) after capped
exponential delays with jitter, so that a fleet of workers does not knock on a
restarting server in step, and nothing is logged per attempt. A probe that meets
an error waiting would not fix (a password changed during a restart, say) ends
the wait with that error for every waiter: the worker stops and says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from corral.db.errors import gist
from corral.errors import DatabaseUnavailable
from corral.tasks.queue import Backoff

log = logging.getLogger("corral.worker")


class Outage:
    """The worker's one wait for the database, shared by everything that needs it."""

    def __init__(self, probe: Callable[[], Awaitable[None]], backoff: Backoff) -> None:
        """``probe`` raises ``DatabaseUnavailable`` while the database cannot be used."""
        self._probe = probe
        self._backoff = backoff
        self._back: asyncio.Future[None] | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        """Whether the database is known to be unavailable now (a wait is under way)."""
        return self._back is not None

    async def wait(self, cause: DatabaseUnavailable) -> None:
        """Return once the database answers again, after ``cause`` said it did not.

        Raises the probe's error if it was not an outage.
        """
        if self._back is None:
            log.warning(
                "database unavailable (%s); pausing claims, trying again at most %.1f s apart",
                gist(cause.__cause__ or cause),
                self._backoff.cap_ms * (1 + self._backoff.jitter) / 1000,
            )
            self._back = asyncio.get_running_loop().create_future()
            self._prober = asyncio.create_task(self._probe_until_back(self._back))
        await asyncio.shield(self._back)

    def close(self) -> None:
        """Stop probing; whoever still waits is cancelled."""
        if self._prober is not None:
            self._prober.cancel()
        if self._back is not None:
            self._back.cancel()
            self._back = None

    async def _probe_until_back(self, back: asyncio.Future[None]) -> None:
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            await asyncio.sleep(self._backoff.delay_ms(attempts) / 1000)
            try:
                await self._probe()
            except DatabaseUnavailable:
                continue
            except Exception as exc:  # not an outage: the waiters say what it was
                self._back = None
                back.set_exception(exc)
                return
            break
        log.warning(
            "database available again after %.1f s (%d attempt(s)); resuming",
            time.monotonic() - started,
            attempts,
        )
        self._back = None
        back.set_result(None)
