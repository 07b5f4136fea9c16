"""Store usage and quotas (docs/store.md § Quotas), on every backend.

A scope's usage is the bytes of its keys (UTF-8) and encoded values, and its
number of keys, over every row it holds, expired ones until they are removed. A
write that would grow either past the store's quota is refused with
``QuotaExceeded`` and writes nothing; shrinking, keeping and deleting always pass.
The model-based test (test_store_model.py) checks the same on random operations;
here each rule has a readable case, and OS processes race for the last bytes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from corral import codec
from corral.errors import QuotaExceeded
from corral.quotas import Quotas
from corral.state import SqlBackend, Store, StoreBackend, Sweeper, open_backend, open_store
from tests.state.test_store_model import stored_rows, totals
from tests.support import SPAWN, FakeClock, run_in_processes, unique_scope

MakeStore = Callable[..., Store]


def size(key: str, value: Any) -> int:
    """What a row of ``key`` and ``value`` counts for: its key's bytes and encoded value's."""
    return len(key.encode()) + len(codec.encode(value))


# -- usage ------------------------------------------------------------------------


async def test_usage_counts_key_bytes_and_encoded_values(
    make_store: MakeStore, backend: StoreBackend
) -> None:
    store = make_store()
    assert backend.usage(store.scope) == (0, 0)
    await store.set("é", "x")  # a two-byte key
    assert backend.usage(store.scope) == (size("é", "x"), 1)
    await store.set("é", "a longer value")  # an overwrite: the new size, not both
    await store.set_many({"k1": [1, 2], "k2": None})
    await store.set_with_ttl("t", b"\x00" * 100, 60_000)
    expected = size("é", "a longer value") + size("k1", [1, 2]) + size("k2", None)
    assert backend.usage(store.scope) == (expected + size("t", b"\x00" * 100), 4)
    await store.set("t", 1)  # shorter
    assert backend.usage(store.scope) == (expected + size("t", 1), 4)
    await store.delete("t")
    await store.clear_many(["k1", "never"])
    assert backend.usage(store.scope) == (size("é", "a longer value") + size("k2", None), 2)
    await store.clear_all()
    assert backend.usage(store.scope) == (0, 0)


async def test_usage_is_per_scope_and_locks_are_not_in_it(
    make_store: MakeStore, backend: StoreBackend
) -> None:
    mine, other = make_store(), make_store()
    await mine.set("k", "v")
    await other.set_many({"a": 1, "b": 2})
    assert await mine.acquire_lock("lock", 60_000)
    assert backend.usage(mine.scope) == (size("k", "v"), 1)
    assert backend.usage(other.scope) == (size("a", 1) + size("b", 2), 2)


async def test_expired_keys_count_until_they_are_swept(
    make_store: MakeStore, backend: StoreBackend, clock: FakeClock
) -> None:
    store = make_store()
    await store.set_with_ttl("soon", "gone", 10)
    await store.set("kept", 1)
    clock.advance(10)
    # Expired: no read returns it, but the row is still held until removed.
    assert backend.usage(store.scope) == (size("soon", "gone") + size("kept", 1), 2)
    assert Sweeper(backend, clock=clock).sweep_once() == 1
    assert backend.usage(store.scope) == (size("kept", 1), 1)
    assert await store.keys() == ["kept"]


# -- quotas -----------------------------------------------------------------------

QUOTAS = Quotas(store_bytes=1_000, store_keys=10)
FILLER = b"f" * 480  # 483 bytes encoded: two rows of it, with one-byte keys, hold 968


async def test_a_write_over_the_bytes_quota_is_refused_and_writes_nothing(
    make_store: MakeStore, backend: StoreBackend
) -> None:
    store = make_store(quotas=QUOTAS)
    await store.set_many({"a": FILLER, "b": FILLER})
    used = backend.usage(store.scope)
    assert used == (2 * size("a", FILLER), 2) == (968, 2)

    message = (
        "this instance's store would hold 1,004 bytes, over its 1,000-byte quota: "
        "delete keys or store less (nothing was written)"
    )
    with pytest.raises(QuotaExceeded) as refused:
        await store.set("c", b"c" * 33)  # 1 + 35 bytes more
    assert str(refused.value) == message
    with pytest.raises(QuotaExceeded, match="would hold 1,004 bytes"):
        await store.set_with_ttl("c", b"c" * 33, 60_000)
    assert stored_rows(backend, store.scope) == {"a": 484, "b": 484}
    await store.set("c", b"c" * 29)  # 968 + 32 = 1,000: exactly full is within
    assert backend.usage(store.scope) == (1_000, 3)

    with pytest.raises(QuotaExceeded, match="would hold 1,001 bytes"):
        await store.set("c", b"c" * 30)  # an overwrite that grows by one byte
    assert await store.get("c") == b"c" * 29
    assert backend.usage(store.scope) == (1_000, 3)


async def test_a_batch_that_would_cross_the_quota_writes_none_of_its_pairs(
    make_store: MakeStore, backend: StoreBackend
) -> None:
    store = make_store(quotas=QUOTAS)
    await store.set_many({"a": FILLER, "b": 1})
    before = stored_rows(backend, store.scope)
    # Each pair alone would fit; together they do not.
    batch = {"b": b"b" * 200, "c": b"c" * 200, "d": b"d" * 200}
    with pytest.raises(QuotaExceeded, match="store would hold 1,093 bytes, over its 1,000-byte"):
        await store.set_many(batch)
    assert stored_rows(backend, store.scope) == before
    assert await store.get_many(["a", "b", "c", "d"]) == [FILLER, 1, None, None]
    # A batch is judged by where it leaves the store: growing one key past the
    # quota while shrinking another by more passes, whatever the order of its pairs.
    await store.set_many({"c": b"c" * 600, "a": b"a" * 100})
    assert backend.usage(store.scope) == (604 + 2 + 103, 3)


async def test_the_key_quota(make_store: MakeStore, backend: StoreBackend) -> None:
    store = make_store(quotas=Quotas(store_bytes=1_000, store_keys=3))
    await store.set_many({"a": 1, "b": 2, "c": 3})
    message = (
        "this instance's store would hold 4 keys, over its 3-key quota: "
        "delete keys or store less (nothing was written)"
    )
    with pytest.raises(QuotaExceeded) as refused:
        await store.set("d", 4)
    assert str(refused.value) == message
    with pytest.raises(QuotaExceeded, match="would hold 5 keys"):
        await store.set_many({"a": 10, "d": 4, "e": 5})
    await store.set("a", 10)  # an existing key is no new key
    await store.delete("b")
    await store.set("d", 4)
    assert await store.list_entries() == [("a", 10), ("c", 3), ("d", 4)]
    assert backend.usage(store.scope)[1] == 3


async def test_over_a_lowered_quota_deleting_and_shrinking_still_pass(
    make_store: MakeStore, backend: StoreBackend
) -> None:
    """An operator may lower a quota below what a store holds: the agent can then
    make room (delete, shrink, overwrite alike), but not grow it."""
    generous = make_store(quotas=QUOTAS)
    await generous.set_many({"a": FILLER, "b": FILLER})
    lowered = make_store(generous.scope, quotas=Quotas(store_bytes=20, store_keys=1))
    await lowered.set("a", FILLER)  # the same size
    await lowered.set("a", b"small")
    await lowered.set_many({"b": b"smaller"})
    with pytest.raises(QuotaExceeded) as refused:
        await lowered.set("a", b"a bit bigger")
    assert str(refused.value) == (
        f"this instance's store would hold {size('a', b'a bit bigger') + size('b', b'smaller')} "
        "bytes and 2 keys, over its 20-byte quota and its 1-key quota: delete keys or store "
        "less (nothing was written)"
    )
    await lowered.delete("b")
    assert backend.usage(lowered.scope) == (size("a", b"small"), 1)


async def test_a_scope_without_quotas_is_not_limited_by_another_scopes(
    make_store: MakeStore, backend: StoreBackend
) -> None:
    tight = make_store(quotas=Quotas(store_bytes=10, store_keys=1))
    free = make_store()
    await free.set_many({f"k{i}": FILLER for i in range(5)})
    await tight.set("a", 1)
    with pytest.raises(QuotaExceeded):
        await tight.set("b", 1)
    assert backend.usage(free.scope) == (5 * size("k0", FILLER), 5)


# -- processes racing for the last bytes --------------------------------------------

RACERS = 3
ATTEMPTS = 30
VALUE = b"v" * 90  # 92 bytes encoded: with a key like "p0-000", a 98-byte row


def fill(url: str, scope: str, racer: int, quotas: Quotas, batch: int, barrier: Any) -> int:
    """Each round, with the others: try to write ``batch`` new keys; how many rounds
    were accepted."""
    store = open_store(url, scope, quotas=quotas)

    async def main() -> int:
        accepted = 0
        for attempt in range(ATTEMPTS):
            pairs = {f"p{racer}-{attempt:02d}{n}": VALUE for n in range(batch)}
            barrier.wait(timeout=60)
            try:
                await store.set_many(pairs) if batch > 1 else await store.set(*pairs.popitem())
            except QuotaExceeded:
                continue
            accepted += 1
        return accepted

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("quotas", "batch", "rows_that_fit"),
    [
        (Quotas(store_bytes=2_550, store_keys=1_000), 1, 26),  # 26 rows of 98 bytes: 2,548
        (Quotas(store_bytes=2_550, store_keys=1_000), 2, 26),  # 13 pairs of them
        (Quotas(store_bytes=10**6, store_keys=25), 1, 25),
    ],
    ids=["bytes", "bytes, batches", "keys"],
)
def test_processes_racing_for_the_last_bytes_never_overshoot(
    sql_url: str, quotas: Quotas, batch: int, rows_that_fit: int
) -> None:
    """Three processes write at once, round after round, into one scope: exactly as
    many writes as fit are accepted, not one more (the check and the write are one
    atomic step on both databases), and the usage is the sum of the rows."""
    scope = unique_scope("racing")
    barrier = SPAWN.Barrier(RACERS)
    accepted = run_in_processes(
        [(fill, (sql_url, scope, racer, quotas, batch, barrier)) for racer in range(RACERS)]
    )
    assert sum(accepted) * batch == rows_that_fit
    backend = SqlBackend.open(sql_url)
    rows = stored_rows(backend, scope)
    assert len(rows) == rows_that_fit
    assert backend.usage(scope) == totals(rows)
    assert totals(rows)[0] <= quotas.store_bytes
    backend.close()


KEYS = [f"shared-{i}" for i in range(6)]


def churn(url: str, scope: str, seed: int, barrier: Any) -> None:
    """Round after round, with the others: overwrite, delete, batch and expire the
    same few keys with values of every size."""
    store = open_store(url, scope)
    sweeper = Sweeper(open_backend(url))
    rng = random.Random(seed)

    async def main() -> None:
        for _ in range(150):
            barrier.wait(timeout=60)
            key, value = rng.choice(KEYS), b"x" * rng.randrange(200)
            match rng.randrange(6):
                case 0 | 1:
                    await store.set(key, value)
                case 2:
                    await store.set_with_ttl(key, value, rng.choice([1, 60_000]))
                case 3:
                    await store.set_many({k: value for k in rng.sample(KEYS, 3)})
                case 4:
                    await store.clear_many(rng.sample(KEYS, 2))
                case _:
                    await asyncio.to_thread(sweeper.sweep_once)

    asyncio.run(main())


def test_usage_stays_exact_under_concurrent_writes_of_the_same_keys(sql_url: str) -> None:
    """Each row replaced or removed is counted as it was at that moment, whoever
    changed it last: three processes churning the same keys leave the exact sum."""
    scope = unique_scope("churn")
    barrier = SPAWN.Barrier(RACERS)
    run_in_processes([(churn, (sql_url, scope, seed, barrier)) for seed in range(RACERS)])
    backend = SqlBackend.open(sql_url)
    assert backend.usage(scope) == totals(stored_rows(backend, scope))
    backend.close()
