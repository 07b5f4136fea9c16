"""The per-instance token bucket behind fetch's rate limit, on a timer the test moves."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import RateLimited
from corral.runtime.network import throttle
from corral.runtime.network.throttle import Throttle
from tests.support import FakeTimer


async def test_a_burst_goes_at_once_then_one_slot_per_interval() -> None:
    timer = FakeTimer()
    bucket = Throttle(rate_per_s=2, burst=3, timer=timer)
    assert [await bucket.take("a", within_s=10) for _ in range(3)] == [0, 0, 0]

    fourth = asyncio.create_task(bucket.take("a", within_s=10))
    await timer.sleeping(1)
    timer.advance(0.5)
    assert await fourth == 0.5  # its slot came half a second after the burst


async def test_waiting_requests_are_served_in_order() -> None:
    timer = FakeTimer()
    bucket = Throttle(rate_per_s=1, burst=1, timer=timer)
    await bucket.take("a", within_s=10)
    waiting = [asyncio.create_task(bucket.take("a", within_s=10)) for _ in range(3)]
    await timer.sleeping(3)
    for n, task in enumerate(waiting, 1):
        timer.advance(1)
        assert await task == n
        assert not any(later.done() for later in waiting[n:])


async def test_a_slot_past_the_timeout_is_refused_at_once() -> None:
    timer = FakeTimer()
    bucket = Throttle(rate_per_s=1, burst=1, timer=timer)
    await bucket.take("a", within_s=1)
    with pytest.raises(RateLimited) as refused:
        await bucket.take("a", within_s=0.5)
    assert str(refused.value) == (
        "this instance's outbound requests are over their rate limit (1 a second, bursts "
        "of 1): the next one may start in 1.00 s, after this fetch's timeout of 0.50 s; "
        "fetch less often, pass a longer timeout_s, or continue in a task (run_task)"
    )
    with pytest.raises(RateLimited, match=r"may start in 1\.00 s"):  # the refusal took no slot
        await bucket.take("a", within_s=0)


async def test_instances_have_buckets_of_their_own() -> None:
    bucket = Throttle(rate_per_s=1, burst=1, timer=FakeTimer())
    await bucket.take("a", within_s=0)
    assert await bucket.take("b", within_s=0) == 0
    with pytest.raises(RateLimited):
        await bucket.take("a", within_s=0)


async def test_a_cancelled_wait_gives_its_slot_back() -> None:
    timer = FakeTimer()
    bucket = Throttle(rate_per_s=1, burst=1, timer=timer)
    await bucket.take("a", within_s=0)
    first = asyncio.create_task(bucket.take("a", within_s=5))
    await timer.sleeping(1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The slot at 1 s is free again; without the refund the next would be at 2 s.
    with pytest.raises(RateLimited, match=r"may start in 1\.00 s"):
        await bucket.take("a", within_s=0)


async def test_idle_full_buckets_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "_KEEP_BUCKETS", 3)
    timer = FakeTimer()
    bucket = Throttle(rate_per_s=1, burst=2, timer=timer)
    for key in "abc":
        await bucket.take(key, within_s=0)
    timer.advance(0.5)
    await bucket.take("c", within_s=0)  # c is still below full after this
    timer.advance(0.5)  # a and b are full again; c is not
    await bucket.take("d", within_s=0)
    assert len(bucket) == 2  # c and d


def test_a_throttle_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError, match="a positive rate and a burst of at least 1"):
        Throttle(rate_per_s=0, burst=1, timer=FakeTimer())
