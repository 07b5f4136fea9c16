"""The TTL sweeper: expired rows are physically purged, in bounded batches, live rows kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from corral.state import MemoryBackend, SqlBackend, Store, StoreBackend, Sweeper
from tests.support import FakeClock, wipe

MakeStore = Callable[..., Store]


class RecordingBackend:
    """Passes every call through, remembering what each ``sweep`` returned."""

    def __init__(self, inner: StoreBackend) -> None:
        self._inner = inner
        self.sweeps: list[int | None] = []

    def sweep(self, now: int, limit: int) -> int | None:
        swept = self._inner.sweep(now, limit)
        self.sweeps.append(swept)
        return swept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def stored_rows(backend: StoreBackend) -> int:
    """Rows physically present, expired or not (readers would hide the expired ones)."""
    if isinstance(backend, SqlBackend):
        with backend.database.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM state")).scalar_one())
    assert isinstance(backend, MemoryBackend)
    return sum(len(scope.rows) for scope in backend._scopes.values())


async def test_sweep_purges_expired_rows_in_batches_and_keeps_live_ones(
    backend: StoreBackend, make_store: MakeStore, clock: FakeClock
) -> None:
    one, two = make_store(), make_store()
    for i in range(4):
        await one.set_with_ttl(f"expired-{i}", i, 100)
    for i in range(3):
        await two.set_with_ttl(f"expired-{i}", i, 50)
    await one.set("forever", "kept")
    await two.set_with_ttl("later", "kept", 101)
    clock.advance(100)  # now == expires_at of the 100 ms keys: expired
    assert stored_rows(backend) == 9

    recording = RecordingBackend(backend)
    assert Sweeper(recording, clock=clock, batch=3).sweep_once() == 7
    assert recording.sweeps == [3, 3, 1]  # bounded batches, stopping at a short one
    assert stored_rows(backend) == 2
    assert await one.list_entries() == [("forever", "kept")]
    assert await two.list_entries() == [("later", "kept")]

    assert Sweeper(backend, clock=clock, batch=3).sweep_once() == 0
    clock.advance(1)
    assert Sweeper(backend, clock=clock, batch=3).sweep_once() == 1
    assert stored_rows(backend) == 1


async def test_sweep_with_a_full_last_batch_checks_once_more(
    backend: StoreBackend, store: Store, clock: FakeClock
) -> None:
    await store.set_many({f"k{i}": i for i in range(3)})
    for i in range(6):
        await store.set_with_ttl(f"t{i}", i, 1)
    clock.advance(1)
    recording = RecordingBackend(backend)
    assert Sweeper(recording, clock=clock, batch=3).sweep_once() == 6
    assert recording.sweeps == [3, 3, 0]
    assert stored_rows(backend) == 3


async def test_a_swept_store_reads_the_same_as_before(
    backend: StoreBackend, store: Store, clock: FakeClock
) -> None:
    await store.set_many({"a": 1, "b": 2})
    await store.set_with_ttl("c", 3, 10)
    await store.set_with_ttl("d", 4, 20)
    clock.advance(15)
    before = await store.list_entries()
    Sweeper(backend, clock=clock, batch=1).sweep_once()
    assert await store.list_entries() == before == [("a", 1), ("b", 2), ("d", 4)]
    assert await store.get_many(["c", "d"]) == [None, 4]


def test_sweeper_settings_must_be_positive(backend: StoreBackend) -> None:
    for options in ({"batch": 0}, {"interval_s": 0}, {"interval_s": -1.0}):
        with pytest.raises(ValueError, match="interval_s and batch must be positive"):
            Sweeper(backend, **options)  # type: ignore[arg-type]


async def test_sweeper_skips_its_turn_while_another_process_sweeps(
    postgres_url: str, clock: FakeClock
) -> None:
    backend = SqlBackend.open(postgres_url)
    wipe(backend.database.engine)
    try:
        store = Store(backend, "sweeper-turn", clock=clock)
        await store.set_with_ttl("k", 1, 1)
        clock.advance(1)
        # Another worker in the middle of a sweep holds the sweeper's advisory lock.
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (0x636F7272_0002,))
            assert backend.sweep(clock.now_ms, 10) is None
            assert Sweeper(backend, clock=clock).sweep_once() == 0
            assert stored_rows(backend) == 1
            other.execute("SELECT pg_advisory_unlock(%s)", (0x636F7272_0002,))
        assert Sweeper(backend, clock=clock).sweep_once() == 1
        assert await store.keys() == []
    finally:
        backend.close()


async def test_run_sweeps_every_interval_and_survives_a_failed_sweep(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    swept_twice = asyncio.Event()
    calls: list[int] = []

    class Flaky(MemoryBackend):
        def sweep(self, now: int, limit: int) -> int:
            calls.append(now)
            if len(calls) == 1:
                raise RuntimeError("database went away")
            swept = super().sweep(now, limit)
            swept_twice.set()
            return swept

    backend = Flaky()
    store = Store(backend, "s", clock=clock)
    await store.set_with_ttl("k", 1, 1)
    clock.advance(1)
    task = asyncio.create_task(Sweeper(backend, clock=clock, interval_s=0.001).run())
    try:
        with caplog.at_level(logging.INFO, logger="corral.state.sweeper"):
            await asyncio.wait_for(swept_twice.wait(), timeout=10)
    finally:
        task.cancel()
    assert "TTL sweep failed; will retry in 0 s" in caplog.text
    assert "swept 1 expired store rows" in caplog.text
    assert backend._scopes["s"].rows == {}
