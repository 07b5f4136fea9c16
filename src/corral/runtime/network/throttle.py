"""The per-instance rate limit on outbound requests: a token bucket per instance.

Each instance may make ``burst`` requests at once, then ``rate_per_s`` a second.
A request over the rate reserves the next free slot and sleeps until it, so
concurrent requests queue fairly (first come, first served) without a lock; one
whose slot lies past its timeout gets ``RateLimited`` at once rather than
sleeping into the same failure later. The buckets live in the worker process:
an instance served by two workers may go up to twice the rate.

Time comes from a :class:`Timer`, so tests move it by hand.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from corral.errors import RateLimited

#: Above this many buckets, full ones are dropped: an idle instance costs nothing.
_KEEP_BUCKETS = 1024


class Timer(Protocol):
    """A monotonic clock the throttle can also sleep on."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemTimer:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class _Bucket:
    tokens: float  # below zero: slots already promised to waiting requests
    at: float


class Throttle:
    def __init__(self, rate_per_s: float, burst: int, timer: Timer) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(
                f"a rate limit needs a positive rate and a burst of at least 1, got "
                f"{rate_per_s} per second and {burst}"
            )
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._timer = timer
        self._buckets: dict[str, _Bucket] = {}

    async def take(self, key: str, *, within_s: float) -> float:
        """Take a slot for ``key``, waiting for one up to ``within_s``; the seconds waited.

        Raises ``RateLimited`` at once when no slot comes free within ``within_s``.
        """
        now = self._timer.now()
        bucket = self._bucket(key, now)
        wait = max(0.0, (1 - bucket.tokens) / self.rate_per_s)
        if wait > within_s:
            raise RateLimited(
                f"this instance's outbound requests are over their rate limit "
                f"({self.rate_per_s:g} a second, bursts of {self.burst}): the next one may "
                f"start in {wait:.2f} s, after this fetch's timeout of {within_s:.2f} s; "
                "fetch less often, pass a longer timeout_s, or continue in a task (run_task)"
            )
        bucket.tokens -= 1
        if wait > 0:
            try:
                await self._timer.sleep(wait)
            except BaseException:  # cancelled: the promised slot goes to the next request
                bucket.tokens = min(self.burst, bucket.tokens + 1)
                raise
        return wait

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _KEEP_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._refill(bucket, now)
        return bucket

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            self._refill(bucket, now)
            if bucket.tokens >= self.burst:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
