"""The value codec: every storable type comes back as the same type and value.

Anything else is refused with a ``TypeError`` naming where inside the value the
problem sits, and a corrupt encoding is a ``ValueError`` on decode.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import math
import re
import uuid
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import codec
from corral.errors import DecodeLimitExceeded
from tests.support import assert_identical


def round_trip(value: Any) -> Any:
    return codec.decode(codec.encode(value))


# -- strategies ------------------------------------------------------------------------

INT_BOUNDARIES = [
    0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, -(2**64),
    2**64 + 1, 2**200, -(2**200), 255, 256, -128, -129,
]  # fmt: skip

# Offsets strictly inside (-24 h, 24 h), down to microseconds.
offsets = st.timedeltas(
    min_value=dt.timedelta(hours=-24) + dt.timedelta(microseconds=1),
    max_value=dt.timedelta(hours=24) - dt.timedelta(microseconds=1),
)
fixed_zones = st.one_of(
    st.just(dt.UTC),
    st.builds(dt.timezone, offsets),
    st.builds(dt.timezone, offsets, st.text(min_size=1, max_size=8)),
    st.sampled_from(
        [
            dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=15)),
            dt.timezone(dt.timedelta(hours=-3, minutes=-30), "NST"),
            dt.timezone(dt.timedelta(0), "Z"),
            dt.timezone(dt.timedelta(0), "UTC"),
        ]
    ),
)
zones = st.one_of(st.none(), fixed_zones, st.timezones())
folds = st.integers(0, 1)
datetimes = st.builds(lambda d, fold: d.replace(fold=fold), st.datetimes(timezones=zones), folds)
times = st.builds(lambda t, fold: t.replace(fold=fold), st.times(timezones=zones), folds)
decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [Decimal(s) for s in ("1.10", "-0", "0E-10", "NaN", "-NaN", "NaN123", "Infinity",
                              "-Infinity", "1E+400", "123456789012345678901234567890.000")]
    ),
)  # fmt: skip
signalling_nans = st.sampled_from([Decimal("sNaN"), Decimal("-sNaN17")])

hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(INT_BOUNDARIES),
    st.floats(),
    st.text(),
    st.binary(),
    datetimes,
    st.dates(),
    times,
    st.timedeltas(),
    decimals.filter(lambda d: not d.is_snan()),  # sNaN cannot be hashed: not in sets
    st.uuids(),
)
scalars = st.one_of(hashable_scalars, signalling_nans)
hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple), st.frozensets(inner)),
    max_leaves=6,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=20,
)


# -- round trips -----------------------------------------------------------------------


@given(values)
def test_every_storable_value_round_trips_with_its_type(value: Any) -> None:
    assert_identical(value, round_trip(value))


def walked(value: Any) -> bytes:
    """What the validating walk alone makes of ``value``: the reference for the fast route."""
    return codec._pack(codec._Encoder().walk(value, (None, "value")))


@given(values)
def test_the_fast_route_writes_the_same_bytes_as_the_walk(value: Any) -> None:
    # Most values skip the walk and go straight to msgpack's C packer; whichever
    # route a value takes, what is stored must not depend on it.
    assert codec.encode(value) == walked(value)


# Written by Corral before encoding had a fast route: stored bytes stay readable and
# the same values still encode to exactly them.
WRITTEN_BEFORE = [
    ({"n": 5, "name": "item-5", "tags": ["a", "b"]},
     "83a16e05a46e616d65a66974656d2d35a47461677392a161a162"),
    ([None, True, False, 0, -1, 2**64 - 1, 2**64, -(2**63) - 1, 1.5, "\u00e9", b"\x00\xff"],
     "9bc0c3c200ffcfffffffffffffffffc70901010000000000000000c70901ff7fffffffffffffffcb3ff8"
     "000000000000a2c3a9c40200ff"),
    ((1, (2, [3]), frozenset({4})), "c70c029301d60292029103d5049104"),
    ({"when": dt.datetime(2024, 10, 27, 2, 30, 0, 7, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
      "day": dt.date(2024, 2, 29)},
     "82a47768656ec71a0599cd07e80a1b021e0007019202ac4575726f70652f5061726973a3646179c705"
     "06ce000b4681"),
    ([dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30), "NST")),
      dt.timedelta(days=-3, seconds=5, microseconds=7)],
     "92c7170796173b3bce000f423f009501ffce0001204800a34e5354d60893fd0507"),
    ({"price": Decimal("1.10"), "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
      "set": {"x"}},
     "83a57072696365d609312e3130a26964d80a12345678123456781234567812345678a3736574c7030391a178"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "stored"), WRITTEN_BEFORE, ids=[s[:12] for _, s in WRITTEN_BEFORE]
)
def test_values_stored_by_earlier_versions_read_back_and_encode_alike(
    value: Any, stored: str
) -> None:
    assert_identical(value, codec.decode(bytes.fromhex(stored)))
    assert codec.encode(value).hex() == stored


@pytest.mark.parametrize("number", INT_BOUNDARIES)
def test_ints_of_any_size_round_trip(number: int) -> None:
    assert_identical(number, round_trip(number))
    assert_identical([number, -number], round_trip([number, -number]))


@given(st.integers(min_value=-(2**300), max_value=2**300))
def test_big_ints_round_trip(number: int) -> None:
    assert_identical(number, round_trip(number))


def test_bool_int_and_float_stay_distinct() -> None:
    # 1 == 1.0 == True in Python; stored, they must stay three different things.
    decoded = round_trip([True, 1, 1.0, 0, False, 0.0, -0.0])
    assert [type(x) for x in decoded] == [bool, int, float, int, bool, float, float]
    assert math.copysign(1, decoded[6]) == -1


@pytest.mark.parametrize("number", [math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324])
def test_special_floats_round_trip(number: float) -> None:
    assert_identical(number, round_trip(number))


@pytest.mark.parametrize(
    "text", ["1.10", "-0", "0.000", "NaN", "-NaN", "sNaN", "NaN42", "Infinity", "-Infinity",
             "1E+2", "1e-7", "12345678901234567890.12345678901234567890"]
)  # fmt: skip
def test_decimals_keep_their_exact_representation(text: str) -> None:
    decoded = round_trip(Decimal(text))
    assert type(decoded) is Decimal
    assert str(decoded) == str(Decimal(text))
    assert_identical(Decimal(text), decoded)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 3, 31, 2, 30),  # naive
        dt.datetime(2024, 10, 27, 2, 30, fold=0, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, seconds=7))),
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(-dt.timedelta(hours=8), "PST")),
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(microseconds=1))),
        dt.datetime.min,
        dt.datetime.max.replace(tzinfo=ZoneInfo("Asia/Kolkata")),
        dt.date(1, 1, 1),
        dt.date(9999, 12, 31),
        dt.time(0, 0),
        dt.time(23, 59, 59, 999999, tzinfo=ZoneInfo("America/New_York")),
        dt.time(12, 0, fold=1, tzinfo=dt.timezone(dt.timedelta(hours=-2), "X")),
        dt.timedelta(days=-3, seconds=5, microseconds=7),
        dt.timedelta.max,
        dt.timedelta.min,
    ],
    ids=repr,
)
def test_dates_and_times_round_trip_with_their_zone_and_fold(value: Any) -> None:
    decoded = round_trip(value)
    assert_identical(value, decoded)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        assert decoded.utcoffset() == value.utcoffset()  # fold picks the right offset
        assert decoded.tzname() == value.tzname()


def test_a_zoneinfo_comes_back_as_the_same_zone() -> None:
    decoded = round_trip(dt.datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Europe/Paris")))
    assert decoded.tzinfo is ZoneInfo("Europe/Paris")


def test_a_zoneinfo_without_a_name_is_refused_when_written() -> None:
    # ZoneInfo.from_file has no key to store; writing it would make a value that
    # can never be read back, so it is refused up front.
    found = [Path(root, "Europe", "Paris") for root in zoneinfo.TZPATH]
    tzif = next((path for path in found if path.is_file()), None)
    if tzif is None:
        pytest.skip("no system time-zone database to read a zone file from")
    with tzif.open("rb") as file:
        zone = ZoneInfo.from_file(file)
    with pytest.raises(TypeError) as raised:
        codec.encode({"when": dt.datetime(2024, 1, 1, tzinfo=zone)})
    assert str(raised.value) == (
        "value['when']: cannot store a ZoneInfo that has no name (one made by "
        "ZoneInfo.from_file); use ZoneInfo('Area/City')"
    )


def test_containers_keep_their_types_and_order() -> None:
    value = {"z": [1, (2, 3)], "a": {4}, "m": frozenset({(5,)}), "": (), "e": [], "d": {}}
    decoded = round_trip(value)
    assert_identical(value, decoded)
    assert list(decoded) == ["z", "a", "m", "", "e", "d"]


def test_shared_parts_are_fine_and_come_back_as_copies() -> None:
    part = [1, 2]
    decoded = round_trip({"a": part, "b": part})
    assert decoded == {"a": [1, 2], "b": [1, 2]}
    assert decoded["a"] is not decoded["b"]


SURROGATE_HINT = "it often comes from os.fsdecode: store the bytes, or decode with errors='replace'"


def test_text_with_a_lone_surrogate_is_refused_naming_its_path() -> None:
    # UTF-8 cannot encode a lone surrogate, which is what os.fsdecode makes of
    # undecodable bytes in a file name.
    with pytest.raises(TypeError) as raised:
        codec.encode({"files": ["ok.txt", "caf\udce9.txt"]})
    assert str(raised.value) == (
        "value['files'][1]: cannot store text with a lone surrogate ('caf\\udce9.txt'); "
        + SURROGATE_HINT
    )
    with pytest.raises(TypeError) as raised:
        codec.encode({"by name": {"caf\udce9": 1}})
    assert str(raised.value) == (
        "value['by name']: cannot store text with a lone surrogate ('caf\\udce9'); "
        + SURROGATE_HINT
    )


def innermost_at(depth: int) -> list[Any]:
    """A list nested ``depth`` containers deep in all."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_value_nested_too_deeply_is_refused_with_a_clear_error() -> None:
    value: list[Any] = []
    innermost = value
    for _ in range(1000):
        innermost.append([])
        innermost = innermost[0]
    with pytest.raises(TypeError) as raised:
        codec.encode(value)
    assert str(raised.value) == (
        "value" + "[0]" * 100 + ": the value is nested more than 100 containers deep; "
        "flatten it, or split it across several keys"
    )
    codec.encode(innermost_at(99))  # one level less is fine


def nested(depth: int, kinds: list[type]) -> Any:
    """``depth`` containers, one inside the next, taking turns at the ``kinds``."""
    value: Any = None
    for level in range(depth):
        kind = kinds[level % len(kinds)]
        value = {"x": value} if kind is dict else kind([value])
    return value


@pytest.mark.parametrize(
    "kinds",
    [[list], [dict], [tuple], [frozenset], [list, tuple, dict], [tuple, frozenset]],
    ids=lambda kinds: "-".join(k.__name__ for k in kinds),
)
def test_the_depth_limit_counts_every_kind_of_container(kinds: list[type]) -> None:
    assert_identical(nested(100, kinds), round_trip(nested(100, kinds)))
    with pytest.raises(TypeError, match="nested more than 100 containers deep"):
        codec.encode(nested(101, kinds))


# -- refusals --------------------------------------------------------------------------


class Foo:
    def __repr__(self) -> str:
        return "Foo()"


class Agent:
    def on_done(self) -> None: ...


class Colour(enum.IntEnum):
    RED = 1


class Name(enum.StrEnum):
    ALICE = "alice"


class Ratio(float):
    pass


class MyList(list[Any]):
    pass


class Paris(dt.tzinfo):
    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)


def _function() -> None: ...


def _cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append({"back": items})
    return items


def _cyclic_dict() -> dict[str, Any]:
    node: dict[str, Any] = {"name": "root"}
    node["self"] = node
    return node


CALLBACK_HINT = "store a callback token from self.callback(...) or the method's name instead"
CYCLE = (
    "the value contains itself (a cycle); store a tree of values, "
    "and refer to shared parts by a key"
)
AS_DICT = "store its fields as a dict"
TZ_HINT = "use datetime.timezone or zoneinfo.ZoneInfo"
STR_KEYS = "convert the keys with str(...)"

REFUSALS = [
    ({"items": [1, 2, 3, Foo()]},
     f"value['items'][3]: cannot store an object of type Foo; {AS_DICT}"),
    (Foo(), f"value: cannot store an object of type Foo; {AS_DICT}"),
    (("a", Foo()), "value[1]: cannot store an object of type Foo"),
    ({"tags": {Foo()}}, "value['tags']{Foo()}: cannot store an object of type Foo"),
    ({"it's": Foo()}, "value[\"it's\"]: cannot store an object of type Foo"),
    (Foo, f"value: cannot store an object of type type; {AS_DICT}"),
    ({"cb": _function}, f"value['cb']: cannot store an object of type function; {CALLBACK_HINT}"),
    ([lambda: 1], f"value[0]: cannot store an object of type function; {CALLBACK_HINT}"),
    ({"cb": Agent().on_done},
     f"value['cb']: cannot store an object of type method; {CALLBACK_HINT}"),
    (len, f"value: cannot store an object of type builtin_function_or_method; {CALLBACK_HINT}"),
    ({"a": {1: "x"}}, f"value['a']: dict keys must be str, found int 1; {STR_KEYS}"),
    ({(1, 2): "x"}, f"value: dict keys must be str, found tuple (1, 2); {STR_KEYS}"),
    ({None: "x"}, f"value: dict keys must be str, found NoneType None; {STR_KEYS}"),
    ({Name.ALICE: 1}, "value: dict keys must be str, found Name <Name.ALICE: 'alice'>"),
    (_cyclic_list(), f"value[1]['back']: {CYCLE}"),
    (_cyclic_dict(), f"value['self']: {CYCLE}"),
    ([Colour.RED], "value[0]: cannot store an object of type Colour; store int(x) or its .value"),
    ({"who": Name.ALICE}, "value['who']: cannot store an object of type Name; store str(x)"),
    (Ratio(0.5), "value: cannot store an object of type Ratio; store float(x) or its .value"),
    (collections.OrderedDict(a=1), "value: cannot store an object of type OrderedDict; convert "
     "it with dict(...)"),
    (collections.defaultdict(list), "value: cannot store an object of type defaultdict; convert "
     "it with dict(...)"),
    (MyList([1]), "value: cannot store an object of type MyList; convert it with list(...)"),
    ({"when": dt.datetime(2024, 1, 1, tzinfo=Paris())},
     f"value['when']: cannot store a time zone of type Paris; {TZ_HINT}"),
    ([dt.time(1, tzinfo=Paris())], f"value[0]: cannot store a time zone of type Paris; {TZ_HINT}"),
    (bytearray(b"x"), "value: cannot store an object of type bytearray"),
    # msgpack's packer would write these itself, each as something that reads back
    # as another type: refused like any other object.
    ({"buf": [memoryview(b"x")]}, "value['buf'][0]: cannot store an object of type memoryview"),
    ([bytearray(b"x")], "value[0]: cannot store an object of type bytearray"),
    ([msgpack.ExtType(5, b"")], "value[0]: cannot store an object of type ExtType"),
    ({"at": msgpack.Timestamp(0)}, "value['at']: cannot store an object of type Timestamp"),
    ({"a": [{b"raw": 1}]}, f"value['a'][0]: dict keys must be str, found bytes b'raw'; {STR_KEYS}"),
    ((1, {2: 3}), f"value[1]: dict keys must be str, found int 2; {STR_KEYS}"),
    ((Colour.RED,), "value[0]: cannot store an object of type Colour"),
    (object(), "value: cannot store an object of type object"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "message"), REFUSALS, ids=[m[:40] for _, m in REFUSALS])
def test_unstorable_values_are_refused_naming_the_path(value: Any, message: str) -> None:
    with pytest.raises(TypeError) as raised:
        codec.encode(value)
    assert str(raised.value).startswith(message), str(raised.value)


def test_the_path_prefix_can_be_chosen() -> None:
    with pytest.raises(TypeError, match=r"^args\[2\]: cannot store an object of type Foo"):
        codec.encode([1, 2, Foo()], path="args")


# -- decoding garbage ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01", b"\x01\x02", msgpack.packb({1: 2})],
    ids=["empty", "never-used-byte", "truncated", "trailing-bytes", "int-map-key"],
)
def test_decoding_garbage_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - msgpack words these; the type is the contract
        codec.decode(data)


def test_decoding_an_unknown_extension_says_the_value_is_corrupt() -> None:
    data = msgpack.packb([1, msgpack.ExtType(99, b"")])
    with pytest.raises(ValueError, match=r"^corrupt stored value: unknown extension type 99$"):
        codec.decode(data)


def _ext(code: int, payload: Any) -> bytes:
    raw = payload if isinstance(payload, bytes) else msgpack.packb(payload)
    return msgpack.packb(msgpack.ExtType(code, raw))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(_ext(5, b"\xff"), "bad payload for extension type 5",
                     id="datetime-not-a-list"),
        pytest.param(_ext(5, [2024, 13, 1, 0, 0, 0, 0, 0, [0]]), "month", id="datetime-month-13"),
        pytest.param(_ext(6, 0), "ordinal", id="date-ordinal-0"),
        pytest.param(_ext(7, [1, 2]), "not enough values", id="time-too-few-fields"),
        pytest.param(_ext(8, "x"), "not enough values", id="timedelta-not-a-list"),
        pytest.param(_ext(9, b"one point five"), "bad payload for extension type 9",
                     id="decimal-not-a-number"),
        pytest.param(_ext(9, b"\xff"), "can't decode", id="decimal-not-utf8"),
        pytest.param(_ext(10, b"short"), "16-char", id="uuid-too-short"),
        pytest.param(_ext(2, b"\xc1"), None, id="tuple-garbage"),
        pytest.param(_ext(3, [[1]]), "bad payload for extension type 3", id="set-of-lists"),
        pytest.param(_ext(5, [2024, 1, 1, 0, 0, 0, 0, 0, [1, "x", 0, 0, None]]),
                     "bad payload for extension type 5", id="zone-offset-not-a-number"),
    ],
)  # fmt: skip
def test_decoding_a_corrupt_extension_payload_raises_value_error(
    data: bytes, message: str | None
) -> None:
    # Whatever shape the damage takes, the reader gets a ValueError, never a stray
    # TypeError or decimal.InvalidOperation from deep inside a decoder.
    with pytest.raises(ValueError, match=None if message is None else re.escape(message)):
        codec.decode(data)


# -- decoding what a hostile sender made ----------------------------------------------

#: Python hashes an int modulo this prime, so its multiples all hash to 0.
HASH_MODULUS = 2**61 - 1


def _set_of(code: int, members: list[Any]) -> bytes:
    """A set (code 3) or frozenset (4) written member by member, as no set could hold
    them if they were equal: how a hostile process can send one."""
    return codec._packed(msgpack.ExtType(code, codec._packed(members)))


def _nested_tuples(depth: int) -> bytes:
    data = codec._packed(0)
    for _ in range(depth):
        data = codec._packed(msgpack.ExtType(2, b"\x91" + data))
    return data


def counted_pauses() -> tuple[codec.Pacing, list[None]]:
    calls: list[None] = []
    return codec.Pacing(lambda: calls.append(None)), calls


@pytest.mark.parametrize(
    ("code", "member"),
    [(3, lambda n: n), (4, lambda n: n), (4, lambda n: (n, "x"))],
    ids=["set-of-ints", "frozenset-of-ints", "frozenset-of-tuples"],
)
def test_a_set_whose_members_hashes_collide_is_refused_before_it_is_built(
    code: int, member: Any
) -> None:
    # Each member that shares a hash makes every later insertion of that hash compare
    # against it: 40,000 of them took 13 s to build. A tuple's hash follows its items'.
    data = _set_of(code, [member(k * HASH_MODULUS) for k in range(40_000)])
    message = (
        "a set has 39,999 members whose hash equals another member's; at most 8 may "
        "(each one makes building the set slower)"
    )
    with pytest.raises(DecodeLimitExceeded, match=re.escape(message)):
        codec.decode(data)
    with pytest.raises(DecodeLimitExceeded, match=re.escape(message)):
        codec.decode(data, pacing=counted_pauses()[0])


def test_equal_members_written_into_a_set_count_as_collisions_too() -> None:
    with pytest.raises(DecodeLimitExceeded, match="a set has 9 members whose hash"):
        codec.decode(_set_of(3, ["same"] * 10))


@pytest.mark.parametrize(
    "value",
    [
        {-1, -2},  # hash(-1) == hash(-2)
        frozenset({0.5, 2**60}),  # and so do 0.5 and 2**60
        {-1, *(k * HASH_MODULUS for k in range(9))},  # eight share one: the most allowed
    ],
)
def test_sets_with_a_few_colliding_members_round_trip(value: Any) -> None:
    assert_identical(value, round_trip(value))


def test_tuples_nested_as_deep_as_encode_writes_decode_and_deeper_is_refused() -> None:
    deepest = 0
    for _ in range(codec.MAX_DEPTH):
        deepest = (deepest,)  # type: ignore[assignment]
    assert_identical(deepest, round_trip(deepest))
    assert codec.encode(deepest) == _nested_tuples(codec.MAX_DEPTH)
    # Each level copies the bytes beneath it: a thousand levels would copy them a
    # thousand times.
    with pytest.raises(
        DecodeLimitExceeded,
        match=r"^tuples and sets are nested more than 100 deep; flatten the value$",
    ):
        codec.decode(_nested_tuples(codec.MAX_DEPTH + 1))


@given(values)
def test_a_paced_decode_gives_the_same_value(value: Any) -> None:
    # Beside a long string, so that it is too long to be decoded at once.
    data = codec.encode([value, "x" * 5000])
    assert_identical([value, "x" * 5000], codec.decode(data, pacing=counted_pauses()[0]))


def test_a_paced_decode_pauses_every_few_hundred_containers() -> None:
    pacing, pauses = counted_pauses()
    value = [[i, (i,), {"i": i}] for i in range(10_000)]
    assert_identical(value, codec.decode(codec.encode(value), pacing=pacing))
    assert len(pauses) >= 40_000 // 256


def test_short_values_are_decoded_at_once_and_pause_between_every_few_kib() -> None:
    # A set_many's values, say: each too short to pause in, but a thousand of them
    # add up; each is decoded whole, with a pause between them every 4 KiB or so.
    pacing, pauses = counted_pauses()
    value = [[1], {"a": (2,)}, "x" * 90]
    data = codec.encode(value)
    assert codec.decode(data, pacing=pacing) == value
    assert pauses == []
    for _ in range(1000):
        assert codec.decode(data, pacing=pacing) == value
    decoded = 1001 * len(data)
    assert decoded // 8192 <= len(pauses) <= decoded // 4096


def test_paced_decodes_sharing_a_pacing_share_the_container_budget() -> None:
    pacing, _ = counted_pauses()
    half = msgpack.packb([[]] * (codec.MAX_CONTAINERS // 2))  # and the list around them
    codec.decode(half, pacing=pacing)
    message = (
        "more than 1,048,576 lists, dicts, tuples, sets and other containers; split the "
        "value across several keys"
    )
    with pytest.raises(DecodeLimitExceeded, match=re.escape(message)):
        codec.decode(half, pacing=pacing)
    assert len(codec.decode(half, pacing=counted_pauses()[0])) == codec.MAX_CONTAINERS // 2


def test_the_fields_of_a_datetime_count_against_the_budget() -> None:
    payload = msgpack.packb([[]] * codec.MAX_CONTAINERS)
    with pytest.raises(DecodeLimitExceeded):
        codec.decode(msgpack.packb(msgpack.ExtType(5, payload)), pacing=counted_pauses()[0])


# -- the comparison these tests rely on ------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (1, True),
        (1, 1.0),
        (0.0, -0.0),
        (Decimal("1.1"), Decimal("1.10")),
        ((1,), [1]),
        ({1}, frozenset({1})),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        (
            dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2024, 1, 1, 1, tzinfo=ZoneInfo("CET")),
        ),
        (dt.datetime(2024, 1, 1, fold=1), dt.datetime(2024, 1, 1)),
        (dt.time(1, tzinfo=dt.timezone(dt.timedelta(0), "Z")), dt.time(1, tzinfo=dt.UTC)),
    ],
)
def test_round_trips_are_checked_more_strictly_than_equality(expected: Any, actual: Any) -> None:
    with pytest.raises(AssertionError):
        assert_identical(expected, actual)
