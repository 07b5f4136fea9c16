"""Purge expired rows so that long-running deploys do not accumulate them.

Readers already ignore expired rows, so the sweeper only reclaims space; it works
in bounded batches, each its own short transaction, so it never holds the
database for long, and one process at a time does it (``StateSQL.sweep`` in
``corral.db.state``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from corral.errors import DatabaseUnavailable
from corral.state.backend import StoreBackend
from corral.state.store import Clock

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
DEFAULT_BATCH = 1000


class Sweeper:
    def __init__(
        self,
        backend: StoreBackend,
        *,
        clock: Clock | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if interval_s <= 0 or batch <= 0:
            raise ValueError("the sweeper's interval_s and batch must be positive")
        self._backend = backend
        self._clock: Clock = clock or time.time
        self.interval_s = interval_s
        self.batch = batch

    def sweep_once(self) -> int:
        """Delete every row expired by now, batch by batch; returns how many."""
        now = math.floor(self._clock() * 1000)
        total = 0
        while True:
            swept = self._backend.sweep(now, self.batch)
            if swept is None:  # another process holds the sweeper's turn
                return total
            total += swept
            if swept < self.batch:
                return total

    async def run(self) -> None:
        """Sweep every ``interval_s`` until cancelled."""
        while True:
            try:
                swept = await self._backend.call(self.sweep_once)
                if swept:
                    log.info("swept %d expired store rows", swept)
            except DatabaseUnavailable:
                pass  # the next round sweeps; whoever waits on the database logs the outage
            except Exception:
                log.exception("TTL sweep failed; will retry in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)
