"""The store against a reference model, on every backend, driven by hypothesis.

The model is a dict per scope of ``key -> (value, expires_at_ms or None)`` plus a
dict of lock leases, with the rule of SPEC §1.1: a key is expired once
``now_ms >= expires_at``. Hypothesis interleaves writes, reads, lock calls, clock
moves (including exactly onto an expiry) and sweeps over two scopes sharing one
backend, and checks every read against the model.

Quotas: scope 0 has small ones, which the writes keep running into; scope 1 has
none. After every step each scope's usage must equal the sum over the rows it
really holds (expired ones too, until a read purges them or a sweep removes
them); a write must be refused exactly when it would grow that sum past a quota,
and a refused one must leave every row as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from corral import codec
from corral.errors import QuotaExceeded
from corral.quotas import Quotas, store_exceeded
from corral.state import Store, StoreBackend
from tests.support import FakeClock, assert_identical, unique_scope

T = TypeVar("T")

# A small alphabet, so that writes, deletes and reads keep colliding, with prefixes
# that nest and code points on either side of the BMP edge.
ALL_KEYS = ["a", "ab", "abc", "b", "ba", "\u00e9", "\uffff", "\U00010000"]
KEYS = st.sampled_from(ALL_KEYS)
PREFIXES = st.sampled_from(["", "a", "ab", "b", "\u00e9", "\uffff", "z"])
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.floats(allow_nan=False, width=16),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=3),
    st.tuples(st.integers(0, 3)),
)
TTLS = st.integers(1, 2_000)
LOCK_TTLS = st.one_of(TTLS, st.just(60_000))  # some leases outlive the whole run
SCOPES = st.sampled_from([0, 1])
KEY_LISTS = st.lists(KEYS, max_size=5)
# Rows are 2 to 13 bytes: five of the eight keys, or about five rows' bytes, fill it.
QUOTAS = [Quotas(store_bytes=24, store_keys=4), None]
#: Before every expiry: ``entries`` with this "now" lists every row a scope holds.
_LONG_AGO = -(2**62)


def stored_rows(backend: StoreBackend, scope: str) -> dict[str, int]:
    """Every row the scope holds, live or expired, with its size as quotas count it."""
    rows = backend.entries(scope, "", _LONG_AGO, values=True)
    return {key: len(key.encode()) + len(value or b"") for key, value in rows}


def totals(rows: dict[str, int]) -> tuple[int, int]:
    return sum(rows.values()), len(rows)


class StoreMachine(RuleBasedStateMachine):
    """Set ``backend`` and ``loop`` on a subclass to run it."""

    backend: ClassVar[StoreBackend]
    loop: ClassVar[asyncio.AbstractEventLoop]

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        base = unique_scope("model")  # fresh scopes per run: earlier runs stay invisible
        self.stores = [
            Store(self.backend, f"{base}-{i}", clock=self.clock, quotas=QUOTAS[i]) for i in range(2)
        ]
        self.data: list[dict[str, tuple[Any, int | None]]] = [{}, {}]
        self.locks: list[dict[str, int]] = [{}, {}]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- the model -------------------------------------------------------------------

    def live(self, scope: int) -> dict[str, Any]:
        now = self.clock.now_ms
        return {
            key: value
            for key, (value, expires_at) in sorted(self.data[scope].items())
            if expires_at is None or now < expires_at
        }

    def pending_expiries(self) -> list[int]:
        now = self.clock.now_ms
        times = [exp for rows in self.data for _, exp in rows.values() if exp is not None]
        times += [exp for leases in self.locks for exp in leases.values()]
        return sorted({exp for exp in times if exp > now})

    # -- usage and quotas --------------------------------------------------------------

    @invariant()
    def usage_is_the_sum_of_the_rows(self) -> None:
        for store in self.stores:
            rows = stored_rows(self.backend, store.scope)
            assert self.backend.usage(store.scope) == totals(rows)

    def written(
        self, scope: int, pairs: list[tuple[str, Any]], write: Coroutine[Any, Any, None]
    ) -> bool:
        """Run ``write`` of ``pairs``; True if it was done, after checking that it was
        refused exactly when it would grow the scope's bytes or keys past a quota,
        with the message saying so and nothing written."""
        rows = stored_rows(self.backend, self.stores[scope].scope)
        after = {**rows, **{k: len(k.encode()) + len(codec.encode(v)) for k, v in pairs}}
        (bytes_before, keys_before), (bytes_after, keys_after) = totals(rows), totals(after)
        quotas = QUOTAS[scope]
        if quotas is None or not (
            (bytes_after > bytes_before and bytes_after > quotas.store_bytes)
            or (keys_after > keys_before and keys_after > quotas.store_keys)
        ):
            self.run(write)
            return True
        expected = store_exceeded(quotas, bytes_after=bytes_after, keys_after=keys_after)
        with pytest.raises(QuotaExceeded) as refused:
            self.run(write)
        assert str(refused.value) == str(expected)
        assert stored_rows(self.backend, self.stores[scope].scope) == rows
        return False

    @rule(limit=st.integers(1, 3))
    def sweep(self, limit: int) -> None:
        """Expired rows go, a few at a time; what the model can read does not change."""
        while self.backend.sweep(self.clock.now_ms, limit):
            pass

    # -- writes ----------------------------------------------------------------------

    @rule(scope=SCOPES, key=KEYS, value=VALUES)
    def set(self, scope: int, key: str, value: Any) -> None:
        if self.written(scope, [(key, value)], self.stores[scope].set(key, value)):
            self.data[scope][key] = (value, None)

    @rule(scope=SCOPES, key=KEYS, value=VALUES, ttl=TTLS)
    def set_with_ttl(self, scope: int, key: str, value: Any, ttl: int) -> None:
        write = self.stores[scope].set_with_ttl(key, value, ttl)
        if self.written(scope, [(key, value)], write):
            self.data[scope][key] = (value, self.clock.now_ms + ttl)

    @rule(scope=SCOPES, key=KEYS)
    def delete(self, scope: int, key: str) -> None:
        self.run(self.stores[scope].delete(key))
        self.data[scope].pop(key, None)

    @rule(scope=SCOPES, pairs=st.lists(st.tuples(KEYS, VALUES), max_size=5))
    def set_many(self, scope: int, pairs: list[tuple[str, Any]]) -> None:
        if self.written(scope, pairs, self.stores[scope].set_many(pairs)):
            for key, value in pairs:  # later duplicates win
                self.data[scope][key] = (value, None)

    @rule(scope=SCOPES, keys=KEY_LISTS)
    def clear_many(self, scope: int, keys: list[str]) -> None:
        self.run(self.stores[scope].clear_many(keys))
        for key in keys:
            self.data[scope].pop(key, None)

    @rule(scope=SCOPES)
    def clear_all(self, scope: int) -> None:
        self.run(self.stores[scope].clear_all())
        self.data[scope].clear()  # locks stay: they are leases, not data

    # -- locks -----------------------------------------------------------------------

    @rule(scope=SCOPES, key=KEYS, ttl=LOCK_TTLS)
    def acquire_lock(self, scope: int, key: str, ttl: int) -> None:
        got = self.run(self.stores[scope].acquire_lock(key, ttl))
        held_until = self.locks[scope].get(key)
        expected = held_until is None or held_until <= self.clock.now_ms
        assert got is expected
        if expected:
            self.locks[scope][key] = self.clock.now_ms + ttl

    @rule(scope=SCOPES, key=KEYS)
    def release_lock(self, scope: int, key: str) -> None:
        self.run(self.stores[scope].release_lock(key))
        self.locks[scope].pop(key, None)

    # -- time ------------------------------------------------------------------------

    # Memory purges an expired row when it is read, which could hide a bug in the
    # read that comes next; so the reads after a clock move run in a drawn order.
    READ_ORDERS = st.permutations(["get", "has", "list_entries", "get_many", "acquire_lock"])

    @rule(ms=st.integers(0, 2_500), order=READ_ORDERS)
    def advance(self, ms: int, order: list[str]) -> None:
        self.clock.advance(ms)
        self.check_all_reads(order)

    @precondition(lambda self: bool(self.pending_expiries()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 0, 1]), order=READ_ORDERS)
    def advance_to_an_expiry(self, data: st.DataObject, offset: int, order: list[str]) -> None:
        """Move the clock to just before, exactly onto, or just past an expiry."""
        target = data.draw(st.sampled_from(self.pending_expiries()), label="expiry")
        self.clock.advance(max(0, target + offset - self.clock.now_ms))
        self.check_all_reads(order)

    def check_all_reads(self, order: list[str]) -> None:
        """Right after time moves, every read agrees with the model, most of all on
        the keys and leases whose expiry is within a millisecond of now."""
        now = self.clock.now_ms
        for scope, store in enumerate(self.stores):
            near = [
                key
                for key, (_, expires_at) in self.data[scope].items()
                if expires_at is not None and abs(expires_at - now) <= 1
            ]
            for read in order:
                live = self.live(scope)
                if read == "get":
                    for key in near:
                        self.get(scope, key)
                elif read == "has":
                    for key in near:
                        self.has(scope, key)
                elif read == "list_entries":
                    assert_identical(list(live.items()), self.run(store.list_entries()))
                elif read == "get_many":
                    expected = [live.get(key) for key in ALL_KEYS]
                    assert_identical(expected, self.run(store.get_many(ALL_KEYS)))
                else:
                    for key, expires_at in list(self.locks[scope].items()):
                        if abs(expires_at - now) <= 1:
                            self.acquire_lock(scope, key, 1_000)

    # -- reads -----------------------------------------------------------------------

    @rule(scope=SCOPES, key=KEYS)
    def get(self, scope: int, key: str) -> None:
        live = self.live(scope)
        found = self.run(self.stores[scope].get(key))
        if key in live:
            assert_identical(live[key], found)
        else:
            assert found is None
        fallback = object()
        got = self.run(self.stores[scope].get_or_default(key, fallback))
        if key in live:
            assert_identical(live[key], got)
        else:
            assert got is fallback

    @rule(scope=SCOPES, key=KEYS)
    def has(self, scope: int, key: str) -> None:
        assert self.run(self.stores[scope].has(key)) is (key in self.live(scope))

    @rule(scope=SCOPES, prefix=PREFIXES)
    def keys(self, scope: int, prefix: str) -> None:
        expected = [key for key in self.live(scope) if key.startswith(prefix)]
        assert self.run(self.stores[scope].keys(prefix)) == expected

    @rule(scope=SCOPES, prefix=PREFIXES)
    def list_entries(self, scope: int, prefix: str) -> None:
        expected = [(k, v) for k, v in self.live(scope).items() if k.startswith(prefix)]
        assert_identical(expected, self.run(self.stores[scope].list_entries(prefix)))

    @rule(scope=SCOPES, keys=KEY_LISTS)
    def get_many(self, scope: int, keys: list[str]) -> None:
        live = self.live(scope)
        expected = [live.get(key) for key in keys]
        assert_identical(expected, self.run(self.stores[scope].get_many(keys)))


@pytest.fixture
def event_loop_for_machine() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def test_store_behaves_like_the_model(
    backend: StoreBackend, event_loop_for_machine: asyncio.AbstractEventLoop
) -> None:
    machine = type(
        "StoreMachineOnBackend",
        (StoreMachine,),
        {"backend": backend, "loop": event_loop_for_machine},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=150,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
