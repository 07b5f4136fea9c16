"""The store contract of SPEC §1.1, checked on every backend: memory, SQLite, PostgreSQL.

Every test here runs three times through the ``backend`` fixture; the clock is a
``FakeClock`` that moves only when a test advances it, so TTL boundaries are exact.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from corral import codec
from corral.state import DEFAULT_MAX_VALUE_BYTES, Store, StoreBackend
from tests.support import FakeClock, assert_identical

MakeStore = Callable[..., Store]


class Foo:
    """An ordinary class instance: not storable."""


def one_of_each() -> dict[str, Any]:
    """A value holding every storable type of SPEC §1.1."""
    return {
        "none": None,
        "bool": True,
        "int": -(2**80),
        "float": -0.0,
        "str": "héllo \U0001f600",
        "bytes": b"\x00\xff",
        "list": [1, [2.5, "x"]],
        "tuple": (1, ("nested",)),
        "set": {1, "a"},
        "frozenset": frozenset({(1, 2)}),
        "aware": dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
        "naive": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        "fixed": dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST")),
        "date": dt.date(1999, 12, 31),
        "time": dt.time(23, 59, 59, 999999, tzinfo=dt.UTC),
        "timedelta": dt.timedelta(days=-1, microseconds=5),
        "decimal": Decimal("1.10"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }


# -- get / set / delete -----------------------------------------------------------------


async def test_get_of_a_key_never_set_is_none(store: Store) -> None:
    assert await store.get("never") is None


async def test_set_then_get_returns_the_same_types_and_values(store: Store) -> None:
    value = one_of_each()
    await store.set("everything", value)
    assert_identical(value, await store.get("everything"))


async def test_set_overwrites(store: Store) -> None:
    await store.set("k", "first")
    await store.set("k", ["second"])
    assert await store.get("k") == ["second"]


async def test_none_is_a_storable_value_distinct_from_missing(store: Store) -> None:
    await store.set("k", None)
    assert await store.has("k")
    assert await store.get_or_default("k", "fallback") is None
    assert await store.keys() == ["k"]


@pytest.mark.parametrize("remove", ["delete", "clear"])
async def test_get_of_a_deleted_key_is_none(store: Store, remove: str) -> None:
    await store.set("k", 1)
    await store.set("other", 2)
    await getattr(store, remove)("k")
    assert await store.get("k") is None
    assert not await store.has("k")
    assert await store.get("other") == 2


@pytest.mark.parametrize("remove", ["delete", "clear"])
async def test_delete_is_idempotent(store: Store, remove: str) -> None:
    await getattr(store, remove)("never-set")
    await store.set("k", 1)
    await getattr(store, remove)("k")
    await getattr(store, remove)("k")
    assert await store.keys() == []


async def test_get_or_default_returns_the_fallback_only_when_missing(
    store: Store, clock: FakeClock
) -> None:
    fallback = object()
    assert await store.get_or_default("never", fallback) is fallback
    await store.set("k", 0)
    assert await store.get_or_default("k", fallback) == 0
    await store.delete("k")
    assert await store.get_or_default("k", fallback) is fallback
    await store.set_with_ttl("t", "soon gone", 10)
    assert await store.get_or_default("t", fallback) == "soon gone"
    clock.advance(10)
    assert await store.get_or_default("t", fallback) is fallback


async def test_the_value_read_is_a_copy(store: Store) -> None:
    written = {"items": [1, 2]}
    await store.set("k", written)
    written["items"].append("changed after set")
    first = await store.get("k")
    first["items"].append("changed after get")
    for read in (
        await store.get("k"),
        (await store.get_many(["k"]))[0],
        (await store.list_entries())[0][1],
    ):
        assert read == {"items": [1, 2]}


async def test_a_corrupt_stored_value_is_reported_not_returned(
    store: Store, backend: StoreBackend
) -> None:
    backend.put(store.scope, "k", b"\xc1", None)  # 0xc1 is never valid msgpack
    with pytest.raises(ValueError):  # noqa: PT011 - msgpack's message; the type is the contract
        await store.get("k")


# -- TTL -----------------------------------------------------------------------------


async def test_a_ttl_key_expires_exactly_at_now_plus_ttl(store: Store, clock: FakeClock) -> None:
    await store.set_with_ttl("k", "v", 1000)
    clock.advance(999)
    assert await store.get("k") == "v"
    assert await store.has("k")
    clock.advance(1)  # now_ms == expires_at: expired
    assert await store.get("k") is None
    assert not await store.has("k")


async def test_expired_keys_are_invisible_to_every_read(store: Store, clock: FakeClock) -> None:
    await store.set("forever", 1)
    await store.set_with_ttl("short", 2, 50)
    await store.set_with_ttl("long", 3, 100)
    clock.advance(50)
    assert await store.get("short") is None
    assert await store.get_or_default("short", "gone") == "gone"
    assert not await store.has("short")
    assert await store.keys() == ["forever", "long"]
    assert await store.list() == ["forever", "long"]
    assert await store.list_entries() == [("forever", 1), ("long", 3)]
    assert await store.get_many(["short", "long", "forever"]) == [None, 3, 1]
    clock.advance(50)
    assert await store.keys() == ["forever"]
    assert await store.list_entries("l") == []


async def test_set_clears_a_previous_ttl(store: Store, clock: FakeClock) -> None:
    await store.set_with_ttl("k", "temporary", 100)
    await store.set("k", "permanent")
    clock.advance(10**9)
    assert await store.get("k") == "permanent"


async def test_set_many_clears_previous_ttls_like_set(store: Store, clock: FakeClock) -> None:
    await store.set_with_ttl("k", "temporary", 100)
    await store.set_many({"k": "permanent"})
    clock.advance(10**9)
    assert await store.get("k") == "permanent"


async def test_set_with_ttl_replaces_the_value_and_the_expiry(
    store: Store, clock: FakeClock
) -> None:
    await store.set("k", "permanent")
    await store.set_with_ttl("k", "first", 100)
    assert await store.get("k") == "first"
    clock.advance(50)
    await store.set_with_ttl("k", "renewed", 100)  # expires at +150 now, not +100
    clock.advance(99)
    assert await store.get("k") == "renewed"
    clock.advance(1)
    assert await store.get("k") is None


async def test_a_key_set_again_after_expiring_is_live(store: Store, clock: FakeClock) -> None:
    await store.set_with_ttl("k", "old", 10)
    clock.advance(10)
    await store.set("k", "new")
    assert await store.get("k") == "new"
    assert await store.keys() == ["k"]


@pytest.mark.parametrize(
    ("ttl", "lifetime_ms"),
    [
        (dt.timedelta(seconds=2), 2000),
        (dt.timedelta(milliseconds=1), 1),
        (dt.timedelta(microseconds=1500), 2),  # fractions round up: never shorter than asked
        (1.5, 2),
        (1, 1),
    ],
)
async def test_ttl_accepts_milliseconds_or_a_timedelta(
    store: Store, clock: FakeClock, ttl: float | dt.timedelta, lifetime_ms: int
) -> None:
    await store.set_with_ttl("k", "v", ttl)
    clock.advance(lifetime_ms - 1)
    assert await store.get("k") == "v"
    clock.advance(1)
    assert await store.get("k") is None


@pytest.mark.parametrize(
    ("ttl", "error", "message"),
    [
        (
            0,
            ValueError,
            "ttl_ms must be a positive number of milliseconds, got 0; "
            "to remove a key now, use delete()",
        ),
        (
            -5,
            ValueError,
            "ttl_ms must be a positive number of milliseconds, got -5; "
            "to remove a key now, use delete()",
        ),
        (-0.5, ValueError, "got -0.5; to remove a key now, use delete()"),
        (dt.timedelta(0), ValueError, "got datetime.timedelta(0); to remove a key now"),
        (dt.timedelta(seconds=-1), ValueError, "got datetime.timedelta(days=-1, seconds=86399)"),
        (math.nan, ValueError, "ttl_ms must be a positive number of milliseconds, got nan"),
        (math.inf, ValueError, "ttl_ms must be a positive number of milliseconds, got inf"),
        (True, TypeError, "ttl_ms must be a number of milliseconds or a timedelta, got bool"),
        ("100", TypeError, "ttl_ms must be a number of milliseconds or a timedelta, got str"),
        (None, TypeError, "ttl_ms must be a number of milliseconds or a timedelta, got NoneType"),
        (Decimal(1), TypeError, "got Decimal"),
    ],
)
async def test_a_bad_ttl_is_refused_and_nothing_is_written(
    store: Store, ttl: Any, error: type[Exception], message: str
) -> None:
    await store.set("k", "before")
    with pytest.raises(error) as raised:
        await store.set_with_ttl("k", "after", ttl)
    assert message in str(raised.value)
    if type(ttl) is float and not math.isfinite(ttl):
        assert "delete()" not in str(raised.value)  # nan/inf are not "remove now"
    with pytest.raises(error) as raised:
        await store.acquire_lock("lock", ttl)
    assert message in str(raised.value)
    assert await store.get("k") == "before"
    assert await store.acquire_lock("lock", 1000)  # the refused call took no lease


@pytest.mark.parametrize(
    "ttl", [dt.timedelta.max, sys.maxsize, 1e20], ids=["timedelta.max", "sys.maxsize", "1e20"]
)
async def test_a_huge_ttl_means_never_on_every_backend(
    store: Store, clock: FakeClock, ttl: float | dt.timedelta
) -> None:
    # "Practically forever" (sys.maxsize ms) is a natural thing to write; past the
    # 64-bit millisecond range the deadline is clamped, never a driver error.
    await store.set_with_ttl("k", "v", ttl)
    assert await store.acquire_lock("lock", ttl)
    clock.advance(10**15)  # about 31,700 years later
    assert await store.get("k") == "v"
    assert await store.acquire_lock("lock", 1000) is False


# -- keys / list / list_entries --------------------------------------------------------

# Keys spread over the code space, including the corners where byte order, UTF-16
# order and code-point order part ways, and where a prefix range has to step over
# the surrogate gap or past the highest code point.
KEY_POOL = [
    "a", "ab", "abc", "a\u00e9", "a\uffff", "a\U00010000", "A", "b", "ba", "\u00e9",
    "\u00e9a", "\u4e2d\u6587", "\U0001f600", "~", "x\ud7ff", "x\ud7ffz", "x\ue000",
    "x\uffff", "x\uffffa", "x\U00010000", "x\U0010ffff", "x\U0010ffffz",
    "x\U0010ffff\U0010ffff", "y", "\U0010ffff", "\U0010ffffa", "a b", "a/b", "a%", "a_",
]  # fmt: skip

PREFIXES = [
    "", "a", "ab", "abc", "abcd", "A", "b", "\u00e9", "x", "x\ud7ff", "x\uffff",
    "x\U0010ffff", "x\U0010ffff\U0010ffff", "\U0010ffff", "z", "\U0001f600", "a%", "a_",
]  # fmt: skip


async def test_keys_are_ascending_by_code_point(store: Store) -> None:
    await store.set_many({key: key for key in reversed(KEY_POOL)})
    expected = sorted(KEY_POOL)  # Python orders str by code point
    assert await store.keys() == expected
    assert await store.list() == expected
    assert await store.list_entries() == [(key, key) for key in expected]
    # The corner that UTF-16 ordering (e.g. some SQL collations) gets wrong:
    assert expected.index("x\uffff") < expected.index("x\U00010000")


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_prefix_selects_exactly_the_keys_starting_with_it(store: Store, prefix: str) -> None:
    await store.set_many({key: key for key in KEY_POOL})
    expected = sorted(key for key in KEY_POOL if key.startswith(prefix))
    assert await store.keys(prefix) == expected
    assert await store.list(prefix) == expected
    assert await store.list_entries(prefix) == [(key, key) for key in expected]


async def test_keys_with_no_prefix_and_an_empty_store(store: Store) -> None:
    assert await store.keys() == []
    assert await store.list_entries() == []
    assert await store.list_entries("") == []


async def test_a_prefix_must_be_a_str(store: Store) -> None:
    with pytest.raises(TypeError, match=r"a key prefix must be str, got bytes b'a'"):
        await store.keys(b"a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"a key prefix must be str, got NoneType None"):
        await store.list_entries(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["a\x00", "\x00", "a\ud800", "\udfff"])
async def test_a_prefix_no_key_can_have_matches_nothing(store: Store, prefix: str) -> None:
    # No key holds NUL or a lone surrogate, so no key starts with such a prefix; every
    # backend says so, rather than passing the text on to a driver that chokes on it.
    await store.set("a", 1)
    assert await store.keys(prefix) == []
    assert await store.list(prefix) == []
    assert await store.list_entries(prefix) == []


# -- get_many / set_many / clear_many / clear_all ---------------------------------------


async def test_get_many_is_aligned_with_the_keys_asked(store: Store, clock: FakeClock) -> None:
    await store.set_many({"a": 1, "b": None, "c": [3]})
    await store.set_with_ttl("gone", 4, 1)
    clock.advance(1)
    asked = ["c", "missing", "a", "gone", "a", "b", "c"]
    assert await store.get_many(asked) == [[3], None, 1, None, 1, None, [3]]
    assert await store.get_many([]) == []
    assert await store.get_many(key for key in ("a", "c")) == [1, [3]]  # any iterable


async def test_get_many_wants_a_list_of_keys_not_one_key(store: Store) -> None:
    with pytest.raises(TypeError, match="keys must be a list of str keys, got str"):
        await store.get_many("abc")
    with pytest.raises(TypeError, match="keys must be a list of str keys, got int"):
        await store.get_many(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make_pairs",
    [
        lambda: {"a": 1, "b": "two"},
        lambda: [("a", 1), ("b", "two")],
        lambda: [["a", 1], ["b", "two"]],
        lambda: (pair for pair in [("a", 1), ("b", "two")]),
    ],
    ids=["dict", "list-of-tuples", "list-of-lists", "generator"],
)
async def test_set_many_takes_a_dict_or_pairs(store: Store, make_pairs: Callable[[], Any]) -> None:
    await store.set_many(make_pairs())
    assert await store.list_entries() == [("a", 1), ("b", "two")]


async def test_set_many_later_duplicates_win(store: Store) -> None:
    await store.set_many([("k", 1), ("other", 0), ("k", 2), ("k", 3)])
    assert await store.get("k") == 3
    await store.set_many([])
    await store.set_many({})
    assert await store.list_entries() == [("k", 3), ("other", 0)]


async def test_set_many_refuses_what_is_not_a_pair(store: Store) -> None:
    with pytest.raises(
        TypeError, match=r"set_many takes a dict or a list of \(key, value\) pairs; item 1 is 'x'"
    ):
        await store.set_many([("a", 1), "x"])
    with pytest.raises(TypeError, match="item 0 is \\('a', 1, 2\\)"):
        await store.set_many([("a", 1, 2)])
    with pytest.raises(TypeError, match="pairs must be a dict or a list of pairs, got str"):
        await store.set_many("ab")  # type: ignore[arg-type]
    assert await store.keys() == []


@pytest.mark.parametrize(
    ("bad_pair", "error", "message"),
    [
        (
            ("c", Foo()),
            TypeError,
            "value: cannot store an object of type Foo; store its fields "
            "as a dict (key 'c': nothing was written)",
        ),
        ((7, 3), TypeError, "store keys must be str, got int 7"),
        (("", 3), ValueError, "store keys must not be empty"),
        (
            ("c", "x" * 200),
            ValueError,
            "the value for key 'c' is 202 bytes encoded; the limit "
            "is 100: split it across several keys (nothing was written)",
        ),
    ],
    ids=["unstorable-value", "int-key", "empty-key", "too-large"],
)
async def test_set_many_is_all_or_nothing(
    make_store: MakeStore, bad_pair: tuple[Any, Any], error: type[Exception], message: str
) -> None:
    store = make_store(max_value_bytes=100)
    await store.set_many({"a": "old a", "b": "old b"})
    batch = [("a", "new a"), ("new", 1), bad_pair, ("b", "new b")]
    with pytest.raises(error) as raised:
        await store.set_many(batch)
    assert str(raised.value) == message
    assert await store.list_entries() == [("a", "old a"), ("b", "old b")]


async def test_set_many_of_a_thousand_keys_is_one_atomic_write(store: Store) -> None:
    pairs = {f"k{i:04d}": i for i in range(1200)}  # more than one SQL chunk
    await store.set_many(pairs)
    assert await store.get_many(list(pairs)) == list(pairs.values())
    assert await store.keys("k") == list(pairs)
    await store.clear_many(list(pairs)[:1100])
    assert await store.keys() == list(pairs)[1100:]


async def test_clear_many_removes_the_listed_keys_and_ignores_unknown_ones(store: Store) -> None:
    await store.set_many({"a": 1, "b": 2, "c": 3})
    await store.clear_many(["a", "unknown", "c", "a"])
    assert await store.list_entries() == [("b", 2)]
    await store.clear_many([])
    await store.clear_many(key for key in ["b"])
    assert await store.keys() == []


async def test_batches_find_keys_whatever_characters_they_hold(store: Store) -> None:
    # SQLite sends a batch's keys as one JSON array: quotes, backslashes, control
    # characters and keys that read as JSON values must arrive as they were.
    awkward = ['say "hi"', "back\\slash", "tab\there", "two\nlines", "\x01", "\x7f",
               "\u2028", "e\u0301", "123", "null", "[1]", *KEY_POOL]  # fmt: skip
    await store.set_many({key: key for key in awkward})
    assert await store.get_many(awkward) == awkward
    await store.clear_many(awkward[::2])
    assert await store.keys() == sorted(awkward[1::2])


async def test_clear_many_with_a_bad_key_removes_nothing(store: Store) -> None:
    await store.set_many({"a": 1, "b": 2})
    with pytest.raises(ValueError, match="store keys must not be empty"):
        await store.clear_many(["a", "", "b"])
    with pytest.raises(TypeError, match="keys must be a list of str keys, got str"):
        await store.clear_many("ab")
    assert await store.keys() == ["a", "b"]


async def test_clear_all_removes_everything_of_this_scope_only(make_store: MakeStore) -> None:
    mine, theirs = make_store(), make_store()
    for store in (mine, theirs):
        await store.set_many({"a": 1, "b": 2})
        await store.set_with_ttl("t", 3, 60_000)
    await mine.clear_all()
    assert await mine.keys() == []
    assert await mine.get("t") is None
    assert await theirs.list_entries() == [("a", 1), ("b", 2), ("t", 3)]
    await mine.set("a", "again")  # the scope stays usable
    assert await mine.list_entries() == [("a", "again")]


# -- scoping ---------------------------------------------------------------------------


async def test_two_scopes_on_one_backend_never_see_each_others_keys(
    make_store: MakeStore,
) -> None:
    base = f"instance-{uuid.uuid4().hex}"
    # A scope that is a prefix of the other must not leak into it either.
    one, two = make_store(base), make_store(base + "-2")
    await one.set_many({"shared": "one's", "only-one": 1})
    await two.set_many({"shared": "two's", "only-two": 2})

    assert await one.get("shared") == "one's"
    assert await two.get("shared") == "two's"
    assert await one.get("only-two") is None
    assert await one.get_or_default("only-two", "missing") == "missing"
    assert not await one.has("only-two")
    assert await one.get_many(["only-two", "shared"]) == [None, "one's"]
    assert await one.keys() == ["only-one", "shared"]
    assert await two.list_entries("only") == [("only-two", 2)]

    await one.delete("shared")
    await one.clear_many(["only-two"])
    assert await two.list_entries() == [("only-two", 2), ("shared", "two's")]
    assert await one.keys() == ["only-one"]


async def test_one_scope_is_shared_by_every_store_bound_to_it(make_store: MakeStore) -> None:
    scope = f"instance-{uuid.uuid4().hex}"
    first, second = make_store(scope), make_store(scope)
    await first.set("k", 1)
    assert await second.get("k") == 1


def test_a_scope_must_be_a_non_empty_str(backend: StoreBackend) -> None:
    for scope in ("", None, 7):
        with pytest.raises(ValueError, match="a store scope must be a non-empty str"):
            Store(backend, scope)  # type: ignore[arg-type]


# -- locks -----------------------------------------------------------------------------


async def test_a_lock_is_held_until_released(make_store: MakeStore) -> None:
    scope = f"instance-{uuid.uuid4().hex}"
    mine, other_execution = make_store(scope), make_store(scope)
    assert await mine.acquire_lock("sync", 60_000) is True
    assert await mine.acquire_lock("sync", 60_000) is False
    assert await other_execution.acquire_lock("sync", 60_000) is False
    assert await other_execution.acquire_lock("another lock", 60_000) is True
    await mine.release_lock("sync")
    assert await other_execution.acquire_lock("sync", 60_000) is True


async def test_a_lock_lease_ends_exactly_at_its_ttl(store: Store, clock: FakeClock) -> None:
    assert await store.acquire_lock("sync", dt.timedelta(seconds=1))
    clock.advance(999)
    assert await store.acquire_lock("sync", 1000) is False
    clock.advance(1)
    assert await store.acquire_lock("sync", 1000) is True  # the old lease ended; a new one
    clock.advance(999)
    assert await store.acquire_lock("sync", 1000) is False


async def test_releasing_is_always_safe(store: Store) -> None:
    await store.release_lock("never held")
    assert await store.acquire_lock("sync", 1000)
    await store.release_lock("sync")
    await store.release_lock("sync")
    assert await store.acquire_lock("sync", 1000)


async def test_locks_are_invisible_to_keys_and_values(store: Store) -> None:
    assert await store.acquire_lock("sync", 60_000)
    assert await store.keys() == []
    assert await store.list_entries() == []
    assert await store.get("sync") is None
    assert not await store.has("sync")
    assert await store.get_many(["sync"]) == [None]
    # A key of the same name is independent of the lock, both ways.
    await store.set("sync", "data")
    assert await store.acquire_lock("sync", 60_000) is False
    await store.delete("sync")
    assert await store.acquire_lock("sync", 60_000) is False
    await store.release_lock("sync")
    assert await store.get("sync") is None


async def test_clear_all_does_not_release_a_held_lock(store: Store) -> None:
    # Store.clear_all: locks are leases, not data; wiping one would let two holders in.
    assert await store.acquire_lock("sync", 60_000)
    await store.set("k", 1)
    await store.clear_all()
    assert await store.keys() == []
    assert await store.acquire_lock("sync", 60_000) is False


async def test_locks_belong_to_one_scope(make_store: MakeStore) -> None:
    mine, theirs = make_store(), make_store()
    assert await mine.acquire_lock("sync", 60_000)
    assert await theirs.acquire_lock("sync", 60_000)
    await theirs.release_lock("sync")
    assert await mine.acquire_lock("sync", 60_000) is False


# -- validation ------------------------------------------------------------------------

KEY_CALLS: dict[str, Callable[[Store, Any], Awaitable[Any]]] = {
    "get": lambda s, k: s.get(k),
    "get_or_default": lambda s, k: s.get_or_default(k, 0),
    "has": lambda s, k: s.has(k),
    "set": lambda s, k: s.set(k, 1),
    "set_with_ttl": lambda s, k: s.set_with_ttl(k, 1, 1000),
    "delete": lambda s, k: s.delete(k),
    "clear": lambda s, k: s.clear(k),
    "get_many": lambda s, k: s.get_many(["ok", k]),
    "set_many(dict)": lambda s, k: s.set_many({"ok": 1, k: 1}),
    "set_many(pairs)": lambda s, k: s.set_many([("ok", 1), (k, 1)]),
    "clear_many": lambda s, k: s.clear_many(["ok", k]),
    "acquire_lock": lambda s, k: s.acquire_lock(k, 1000),
    "release_lock": lambda s, k: s.release_lock(k),
}


class KeyEnum(str):
    """A str subclass, e.g. a StrEnum member: keys must be exactly str."""


BAD_KEYS = [
    (42, TypeError, "store keys must be str, got int 42"),
    (b"k", TypeError, "store keys must be str, got bytes b'k'"),
    (None, TypeError, "store keys must be str, got NoneType None"),
    (KeyEnum("k"), TypeError, "store keys must be str, got KeyEnum 'k'"),
    ("", ValueError, "store keys must not be empty"),
    ("a\x00b", ValueError, "store key 'a\\x00b' contains a NUL character (\\x00); remove it"),
    ("\ud800", ValueError, "store key '\\ud800' is not valid Unicode text (it has a lone "
     "surrogate)"),
    ("ab\udfff", ValueError, "store key 'ab\\udfff' is not valid Unicode text"),
    ("\u00e9" * 257, ValueError, "store key '" + "\u00e9" * 32 + "'... is 514 bytes in UTF-8; "
     "the limit is 512: keep keys short and put data in the value"),
    ("k" * 513, ValueError, "is 513 bytes in UTF-8; the limit is 512"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "error", "message"), BAD_KEYS, ids=lambda x: repr(x)[:12])
async def test_every_method_refuses_a_bad_key_with_a_clear_error(
    store: Store, key: Any, error: type[Exception], message: str
) -> None:
    await store.set("ok", "before")
    for name, call in KEY_CALLS.items():
        with pytest.raises(error) as raised:
            await call(store, key)
        assert message in str(raised.value), f"{name}: {raised.value}"
    assert await store.list_entries() == [("ok", "before")]  # nothing written or removed
    assert await store.acquire_lock("ok", 1000)


@pytest.mark.parametrize(
    "key", ["k" * 512, "\u00e9" * 256, "\U0001f600" * 128, "k", " ", "\U0010ffff"]
)
async def test_keys_up_to_512_utf8_bytes_are_fine(store: Store, key: str) -> None:
    await store.set(key, "v")
    assert await store.get(key) == "v"
    assert await store.keys() == [key]
    assert await store.acquire_lock(key, 1000)


async def test_a_value_over_the_size_limit_is_refused_and_nothing_is_written(
    make_store: MakeStore,
) -> None:
    store = make_store(max_value_bytes=64)
    await store.set("k", "old")
    at_limit = "x" * 62  # msgpack str8: 2 header bytes + 62
    assert len(codec.encode(at_limit)) == 64
    await store.set("fits", at_limit)
    assert await store.get("fits") == at_limit

    too_big = "x" * 63
    expected = (
        "the value for key 'k' is 65 bytes encoded; the limit is 64: "
        "split it across several keys (nothing was written)"
    )
    for call in (
        store.set("k", too_big),
        store.set_with_ttl("k", too_big, 1000),
        store.set_many({"k": too_big}),
    ):
        with pytest.raises(ValueError, match="the limit is 64") as raised:
            await call
        assert str(raised.value) == expected
    assert await store.get("k") == "old"


async def test_the_default_value_limit_is_one_mebibyte(store: Store) -> None:
    assert DEFAULT_MAX_VALUE_BYTES == 1024 * 1024
    largest = b"\x01" * (1024 * 1024 - 5)  # bin32 header: 5 bytes
    await store.set("big", largest)
    assert await store.get("big") == largest
    with pytest.raises(ValueError, match="is 1048577 bytes encoded; the limit is 1048576"):
        await store.set("bigger", largest + b"\x01")
    assert not await store.has("bigger")


async def test_an_unstorable_value_names_its_path_and_nothing_is_written(store: Store) -> None:
    await store.set("k", "old")
    value = {"items": [1, 2, 3, Foo()]}
    expected = (
        "value['items'][3]: cannot store an object of type Foo; store its fields as a dict "
        "(key 'k': nothing was written)"
    )
    for call in (
        store.set("k", value),
        store.set_with_ttl("k", value, 1000),
        store.set_many({"k": value}),
    ):
        with pytest.raises(TypeError) as raised:
            await call
        assert str(raised.value) == expected
    assert await store.get("k") == "old"


async def test_a_function_value_points_at_callbacks(store: Store) -> None:
    with pytest.raises(TypeError) as raised:
        await store.set("cb", {"on_done": lambda: None})
    assert str(raised.value) == (
        "value['on_done']: cannot store an object of type function; store a callback token "
        "from self.callback(...) or the method's name instead (key 'cb': nothing was written)"
    )


async def test_text_utf8_cannot_encode_is_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(TypeError) as raised:
        await store.set("k", {"name": "caf\udce9"})  # a lone surrogate, as from os.fsdecode
    message = str(raised.value)
    assert message.startswith("value['name']: cannot store text with a lone surrogate")
    assert message.endswith("(key 'k': nothing was written)")
    assert not await store.has("k")
