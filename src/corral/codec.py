"""Value encoding shared by the host and the sandbox.

Every value an agent stores, passes to a callback, or sends over the sandbox RPC
channel goes through here, so that what is read back is the same type and value
that was written. The encoding is msgpack: native types map to themselves and
the types msgpack lacks travel as typed extensions.

Types are matched exactly: a subclass (an ``IntEnum``, an ``OrderedDict``) would
come back as its base type, which breaks the "same type back" promise, so it is
refused with a hint instead.

Encoding takes one of two routes to the same bytes. Most values are vouched for
by a check that only looks at types, then written by msgpack's C packer, which
calls back into Python only for the types msgpack lacks: a store call from the
sandbox encodes on every call, and building a converted copy of each value in
Python was most of the cost. Anything that check cannot vouch for, and anything
the packer refuses (a lone surrogate, an unstorable time zone), takes the
validating walk, because only the walk knows *where* inside a value an
unstorable object sits, and an agent author needs that path
(``value['items'][3]``) to find the mistake.

Decoding is handed bytes a sandboxed process made, so what it costs must follow
their length, whatever they hold: :func:`decode` refuses, before paying for them,
a set built so that its members' hashes collide and tuples or sets nested deeper
than :func:`encode` writes; and, given a :class:`Pacing`, decodes in steps between
which the caller's other work can run (the limits, and what each bounds, are below).

Over 500 lines, on purpose: the sandbox imports this module and nothing of the host,
so encoding, decoding and their limits stay one self-contained module that both sides
load, and a type's encoder sits beside its decoder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgpack

from corral import activities
from corral.activities import Activity, Note
from corral.errors import DecodeLimitExceeded

__all__ = ["Pacing", "decode", "encode"]

# Extension type codes. They are part of the on-disk format: never renumber.
_EXT_BIGINT: Final = 1
_EXT_TUPLE: Final = 2
_EXT_SET: Final = 3
_EXT_FROZENSET: Final = 4
_EXT_DATETIME: Final = 5
_EXT_DATE: Final = 6
_EXT_TIME: Final = 7
_EXT_TIMEDELTA: Final = 8
_EXT_DECIMAL: Final = 9
_EXT_UUID: Final = 10
_EXT_ACTIVITY: Final = 11
_EXT_NOTE: Final = 12

# Time-zone kinds inside a datetime/time payload.
_TZ_NAIVE: Final = 0
_TZ_FIXED: Final = 1  # datetime.timezone: offset (and an optional name)
_TZ_ZONEINFO: Final = 2  # zoneinfo.ZoneInfo: the IANA key

#: Containers inside containers; deeper values are refused (msgpack and recursion agree).
MAX_DEPTH: Final = 100

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1

_SCALARS: Final = frozenset({str, float, bool, bytes, type(None)})
_CONTAINERS: Final = frozenset({list, dict, tuple, set, frozenset})
_SEQUENCE_CODES: Final[dict[type, int]] = {
    tuple: _EXT_TUPLE,
    set: _EXT_SET,
    frozenset: _EXT_FROZENSET,
}
#: Values of the model's own types (``corral.activities``), stored as the list of their fields.
_RECORD_CODES: Final[dict[type, int]] = {Activity: _EXT_ACTIVITY, Note: _EXT_NOTE}
#: What the C packer writes itself (it hands an int beyond 64 bits to ``_extension``).
_NATIVE: Final = _SCALARS | {int}
_STR_ONLY: Final = frozenset({str})
# Past this length, a run of native items is vouched for in C before looking closer.
_LONG: Final = 16


def _hint_for(obj: object) -> str:
    """Say what to store instead of an unstorable object."""
    if callable(obj) and not isinstance(obj, type):
        return "store a callback token from self.callback(...) or the method's name instead"
    if isinstance(obj, dict):
        return "convert it with dict(...)"
    if isinstance(obj, list):
        return "convert it with list(...)"
    if isinstance(obj, (str, int, float)):
        base = next(t for t in (bool, int, float, str) if isinstance(obj, t))
        return f"store {base.__name__}(x) or its .value instead"
    if isinstance(obj, dt.tzinfo):
        return "use datetime.timezone or zoneinfo.ZoneInfo"
    return "store its fields as a dict"


_Path = tuple[Any, ...] | None
"""Where a value sits: (parent path, step) pairs, rendered only for an error message."""


def _render(path: _Path) -> str:
    steps: list[str] = []
    while path is not None:
        path, step = path
        steps.append(step if isinstance(step, str) else f"[{step[0]!r}]")
    return "".join(reversed(steps))


def _refuse(path: _Path, message: str) -> TypeError:
    return TypeError(f"{_render(path)}: {message}")


class _Encoder:
    """One validating walk over a value, producing msgpack-ready objects."""

    def __init__(self) -> None:
        self._active: set[int] = set()  # ids of containers on the current path

    def walk(self, obj: Any, path: _Path) -> Any:
        kind = type(obj)
        if kind is str:
            return _checked_text(obj, path)
        if kind in _SCALARS:
            return obj
        if kind is int and _INT64_MIN <= obj <= _UINT64_MAX:
            return obj
        if kind in _CONTAINERS or kind in _RECORD_CODES:
            return self._container(obj, path)
        extension = _LEAF_EXTENSIONS.get(kind)
        if extension is None:
            raise _refuse(path, f"cannot store an object of type {kind.__name__}; {_hint_for(obj)}")
        return extension(obj, path)

    def _container(self, obj: Any, path: _Path) -> Any:
        ident = id(obj)
        if ident in self._active:
            raise _refuse(
                path,
                "the value contains itself (a cycle); store a tree of values, "
                "and refer to shared parts by a key",
            )
        if len(self._active) >= MAX_DEPTH:
            raise _refuse(
                path,
                f"the value is nested more than {MAX_DEPTH} containers deep; flatten it, "
                "or split it across several keys",
            )
        self._active.add(ident)
        try:
            kind = type(obj)
            walk = self.walk
            if kind is dict:
                out: dict[str, Any] = {}
                for key, item in obj.items():
                    if type(key) is not str:
                        raise _refuse(
                            path,
                            f"dict keys must be str, found {type(key).__name__} {key!r}; "
                            "convert the keys with str(...)",
                        )
                    out[_checked_text(key, path)] = walk(item, (path, (key,)))
                return out
            if kind is list:
                return [walk(item, (path, (i,))) for i, item in enumerate(obj)]
            code = _RECORD_CODES.get(kind)
            if code is not None:  # an Activity or Note: its fields, by name in errors
                names = [f.name for f in dataclasses.fields(obj)]
                try:
                    values = activities.record_fields(obj)
                except TypeError as exc:  # what decoding would refuse: never written
                    raise _refuse(path, str(exc)) from None
                items = [walk(v, (path, f".{n}")) for n, v in zip(names, values, strict=True)]
                return msgpack.ExtType(code, _pack(items))
            if kind is tuple:
                items = [walk(item, (path, (i,))) for i, item in enumerate(obj)]
            else:  # set / frozenset: members have no index, so name the member itself.
                items = [walk(item, (path, f"{{{item!r}}}")) for item in obj]
            return msgpack.ExtType(_SEQUENCE_CODES[kind], _pack(items))
        finally:
            self._active.discard(ident)


# -- the fast route ------------------------------------------------------------------


def _vouched(container: Any, depth: int) -> bool:
    """Whether the C packer may write ``container`` as it stands, ``depth`` deep.

    Only types are looked at: every part must be of a storable type exactly (the
    packer itself would write a ``bytearray``, a ``memoryview`` or an ``ExtType``),
    dict keys must be ``str``, and the nesting must stay within ``MAX_DEPTH``,
    which also ends a cycle. ``False`` sends the value to the walk.
    """
    if depth >= MAX_DEPTH:
        return False
    if type(container) is dict:
        if not _STR_ONLY.issuperset(map(type, container)):
            return False
        items = container.values()
    else:
        items = container
    if len(items) > _LONG and _NATIVE.issuperset(map(type, items)):
        return True
    for item in items:
        kind = type(item)
        if kind not in _LEAVES and (kind not in _CONTAINERS or not _vouched(item, depth + 1)):
            return False
    return True


def _extension(obj: Any) -> msgpack.ExtType:
    """The packer's ``default``: called only for a vouched-for part msgpack has no type for."""
    kind = type(obj)
    code = _SEQUENCE_CODES.get(kind)
    if code is not None:
        return msgpack.ExtType(code, _packed(list(obj)))
    return _LEAF_EXTENSIONS[kind](obj, None)


def _packed(obj: Any) -> bytes:
    # A packer per call: one cached per thread measured only ~50 ns faster, and a
    # fresh one is safe from any thread and from within ``_extension``.
    packed: bytes = msgpack.Packer(default=_extension, strict_types=True, buf_size=256).pack(obj)
    return packed


def _checked_text(text: str, path: _Path) -> str:
    """``text`` if it can be stored: UTF-8 has no encoding for a lone surrogate."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _refuse(
                path,
                f"cannot store text with a lone surrogate ({text[:40]!r}); it often comes "
                "from os.fsdecode: store the bytes, or decode with errors='replace'",
            ) from None
    return text


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


def _tz_fields(tz: dt.tzinfo | None, path: _Path) -> list[Any]:
    if tz is None:
        return [_TZ_NAIVE]
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default_name = dt.timezone(offset).tzname(None)
        return [
            _TZ_FIXED,
            offset.days,
            offset.seconds,
            offset.microseconds,
            None if name == default_name else name,
        ]
    if type(tz) is ZoneInfo:
        if tz.key is None:
            raise _refuse(
                path,
                "cannot store a ZoneInfo that has no name (one made by ZoneInfo.from_file); "
                "use ZoneInfo('Area/City')",
            )
        return [_TZ_ZONEINFO, tz.key]
    raise _refuse(
        path,
        f"cannot store a time zone of type {type(tz).__name__}; "
        "use datetime.timezone or zoneinfo.ZoneInfo",
    )


def _tz_from(fields: list[Any]) -> dt.tzinfo | None:
    kind = fields[0]
    if kind == _TZ_NAIVE:
        return None
    if kind == _TZ_FIXED:
        offset = dt.timedelta(days=fields[1], seconds=fields[2], microseconds=fields[3])
        if offset == dt.timedelta(0) and fields[4] is None:
            return dt.UTC
        return dt.timezone(offset) if fields[4] is None else dt.timezone(offset, fields[4])
    return ZoneInfo(fields[1])


def _datetime_fields(value: dt.datetime, path: _Path) -> list[Any]:
    return [
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.fold,
        _tz_fields(value.tzinfo, path),
    ]


def _time_fields(value: dt.time, path: _Path) -> list[Any]:
    return [
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.fold,
        _tz_fields(value.tzinfo, path),
    ]


_LEAF_EXTENSIONS: Final[dict[type, Callable[[Any, _Path], msgpack.ExtType]]] = {
    int: lambda n, _: msgpack.ExtType(_EXT_BIGINT, _int_to_bytes(n)),  # beyond 64 bits
    dt.datetime: lambda d, path: msgpack.ExtType(_EXT_DATETIME, _pack(_datetime_fields(d, path))),
    dt.date: lambda d, _: msgpack.ExtType(_EXT_DATE, _pack(d.toordinal())),
    dt.time: lambda t, path: msgpack.ExtType(_EXT_TIME, _pack(_time_fields(t, path))),
    dt.timedelta: lambda d, _: msgpack.ExtType(
        _EXT_TIMEDELTA, _pack([d.days, d.seconds, d.microseconds])
    ),
    Decimal: lambda d, _: msgpack.ExtType(_EXT_DECIMAL, str(d).encode()),
    uuid.UUID: lambda u, _: msgpack.ExtType(_EXT_UUID, u.bytes),
}
#: Leaves the fast route may pack: native, or made an extension by ``_extension``.
_LEAVES: Final = _NATIVE | frozenset(_LEAF_EXTENSIONS)


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


# -- decoding -----------------------------------------------------------------------
#
# Decoding may be handed bytes from an untrusted sender (a sandboxed process), so its
# cost must follow the number of bytes, whatever they hold. msgpack itself is linear;
# three things here were not. A set whose members all have the same hash takes
# quadratic time to build (an int's hash is the int modulo 2**61 - 1, so such members
# are trivial to make, and a tuple's hash follows from its items'). Every extension
# payload is copied out of its parent's bytes, so nesting tuples N deep copies the
# innermost bytes N times. And a byte can be a whole container (an empty list): the
# time and the garbage collector's work go with the containers built, which a paced
# decode counts.


#: Members of one set that may share their hash value with another member. Distinct
#: values rarely do (-1 and -2, n and n + 2**61 - 1), and each one makes every later
#: insertion of that hash compare against all of them.
MAX_SHARED_HASHES: Final = 8

#: Containers (lists, dicts, and values msgpack has no type for: tuples, sets,
#: datetimes...) paced decodes sharing one :class:`Pacing` may build. A value within
#: the store's 1 MiB limit cannot hold more; the cap bounds what a larger frame costs
#: in time and in the garbage collector's passes while it is alive.
MAX_CONTAINERS: Final = 2**20

# Bytes a paced decode decodes at once, without counting or pausing: at worst one
# container per byte, a millisecond or so.
_AT_ONCE: Final = 4096
# Containers a paced decode builds between two calls of its ``pause``.
_PAUSE_EVERY: Final = 256


def _unpack(data: bytes, depth: int, pacing: Pacing | None) -> Any:
    if pacing is None:
        return msgpack.unpackb(data, raw=False, ext_hook=_EXT_HOOKS[depth], strict_map_key=True)
    return pacing.unpack(data, depth)


class Pacing:
    """A paced decode's pause and container budget; decodes that share one share both.

    ``pause`` is called after every few hundred containers built, and between short
    decodes every few KiB; it may suspend the decode there (``corral.db.bridge.pause``
    does, inside a greenlet), so that the caller's other work runs meanwhile. Together
    the decodes build at most ``MAX_CONTAINERS`` (counted in those over ``_AT_ONCE``
    bytes: a shorter one builds no more than its bytes, and is done within a
    millisecond). The host gives a tool call's arguments one, and the store the values
    of one ``set_many``.
    """

    __slots__ = ("_left", "_pause", "_unpaused_bytes", "_until_pause")

    def __init__(self, pause: Callable[[], None]) -> None:
        self._pause = pause
        self._left = MAX_CONTAINERS
        self._until_pause = _PAUSE_EVERY
        self._unpaused_bytes = 0

    def built(self, container: Any) -> Any:
        self._left -= 1
        if self._left < 0:
            raise DecodeLimitExceeded(
                f"more than {MAX_CONTAINERS:,} lists, dicts, tuples, sets and other "
                "containers; split the value across several keys"
            )
        self._until_pause -= 1
        if not self._until_pause:
            self.pause()
        return container

    def pause(self) -> None:
        """Let the caller's ``pause`` suspend the decode here."""
        self._until_pause = _PAUSE_EVERY
        self._unpaused_bytes = 0
        self._pause()

    def at_once(self, data: bytes) -> Any:
        """``data``, short, decoded without hooks; a pause after every few KiB of such."""
        self._unpaused_bytes += len(data)
        if self._unpaused_bytes > _AT_ONCE:
            self.pause()
        return msgpack.unpackb(data, raw=False, ext_hook=_EXT_HOOKS[0], strict_map_key=True)

    def extension(self, depth: int, code: int, data: bytes) -> Any:
        self.built(None)
        if len(data) > _AT_ONCE:  # each level of nesting copies and decodes its payload
            self.pause()
        return _ext_hook(depth, self, code, data)

    def unpack(self, data: bytes, depth: int | None) -> Any:
        """``data`` decoded, its extensions ``depth`` deep; ``None``: it has none."""
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            list_hook=self.built,
            object_hook=self.built,
            ext_hook=msgpack.ExtType if depth is None else functools.partial(self.extension, depth),
        )


def _fields(data: bytes, pacing: Pacing | None) -> Any:
    """The fields a datetime, date, time or timedelta is stored as (never an extension)."""
    if pacing is None:
        return msgpack.unpackb(data, raw=False)
    return pacing.unpack(data, None)


def _items(data: bytes, depth: int, pacing: Pacing | None) -> list[Any]:
    """The items of a tuple, set or frozenset, one level deeper."""
    if depth >= MAX_DEPTH:
        raise DecodeLimitExceeded(
            f"tuples and sets are nested more than {MAX_DEPTH} deep; flatten the value"
        )
    items: list[Any] = _unpack(data, depth + 1, pacing)
    return items


def _members(data: bytes, depth: int, pacing: Pacing | None) -> list[Any]:
    """A set's members, once it is known that building the set takes linear time.

    A paced decode may pause after each of the three passes over a large set's
    members (decoding, hashing, and then the caller's building the set).
    """
    members = _items(data, depth, pacing)
    if len(members) > MAX_SHARED_HASHES + 1:
        if pacing is not None:
            pacing.pause()
        shared = len(members) - len(set(map(hash, members)))
        if shared > MAX_SHARED_HASHES:
            raise DecodeLimitExceeded(
                f"a set has {shared:,} members whose hash equals another member's; "
                f"at most {MAX_SHARED_HASHES} may (each one makes building the set slower)"
            )
        if pacing is not None:
            pacing.pause()
    return members


def _decode_datetime(data: bytes, depth: int, pacing: Pacing | None) -> dt.datetime:
    y, mo, d, h, mi, s, us, fold, tz = _fields(data, pacing)
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_from(tz), fold=fold)


def _decode_time(data: bytes, depth: int, pacing: Pacing | None) -> dt.time:
    h, mi, s, us, fold, tz = _fields(data, pacing)
    return dt.time(h, mi, s, us, tzinfo=_tz_from(tz), fold=fold)


def _decode_timedelta(data: bytes, depth: int, pacing: Pacing | None) -> dt.timedelta:
    days, seconds, micros = _fields(data, pacing)
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


_Decoder = Callable[[bytes, int, "Pacing | None"], Any]
_DECODERS: Final[dict[int, _Decoder]] = {
    _EXT_BIGINT: lambda b, _, __: int.from_bytes(b, "big", signed=True),
    _EXT_TUPLE: lambda b, depth, pacing: tuple(_items(b, depth, pacing)),
    _EXT_SET: lambda b, depth, pacing: set(_members(b, depth, pacing)),
    _EXT_FROZENSET: lambda b, depth, pacing: frozenset(_members(b, depth, pacing)),
    _EXT_DATETIME: _decode_datetime,
    _EXT_DATE: lambda b, depth, pacing: dt.date.fromordinal(_fields(b, pacing)),
    _EXT_TIME: _decode_time,
    _EXT_TIMEDELTA: _decode_timedelta,
    _EXT_DECIMAL: lambda b, _, __: Decimal(b.decode()),
    _EXT_UUID: lambda b, _, __: uuid.UUID(bytes=b),
    _EXT_ACTIVITY: lambda b, depth, pacing: activities.activity_from_fields(
        _items(b, depth, pacing)
    ),
    _EXT_NOTE: lambda b, depth, pacing: activities.note_from_fields(_items(b, depth, pacing)),
}


def _ext_hook(depth: int, pacing: Pacing | None, code: int, data: bytes) -> Any:
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise ValueError(f"corrupt stored value: unknown extension type {code}")
    try:
        return decoder(data, depth, pacing)
    except ValueError:
        raise
    except Exception as exc:  # a payload of the wrong shape, whatever exception it causes
        raise ValueError(f"corrupt stored value: bad payload for extension type {code}") from exc


# The plain decode's extension hook for each depth: made once, not per decode.
_EXT_HOOKS: Final = [functools.partial(_ext_hook, depth, None) for depth in range(MAX_DEPTH + 1)]


def encode(value: Any, *, path: str = "value") -> bytes:
    """Encode a storable value; raise ``TypeError`` naming the offending path."""
    kind = type(value)
    if kind in _LEAVES or (kind in _CONTAINERS and _vouched(value, 0)):
        try:
            return _packed(value)
        except (TypeError, ValueError):
            pass  # a lone surrogate or an unstorable time zone: the walk says where
    return _pack(_Encoder().walk(value, (None, path)))


def decode(data: bytes, *, pacing: Pacing | None = None) -> Any:
    """Decode bytes produced by :func:`encode`; ``ValueError`` if they are not such bytes.

    The time it takes grows with ``len(data)``, never faster, whoever made the bytes:
    a set with more than ``MAX_SHARED_HASHES`` members whose hash equals another
    member's, and tuples or sets nested more than ``MAX_DEPTH`` deep (deeper than
    :func:`encode` writes), raise :class:`DecodeLimitExceeded`.

    ``pacing`` makes the decode *paced*, for bytes from an untrusted sender decoded
    where other work waits (the host's event loop): see :class:`Pacing`. Bytes up to
    a few KiB are decoded at once all the same, which takes a millisecond at most.
    """
    if pacing is None:
        return msgpack.unpackb(data, raw=False, ext_hook=_EXT_HOOKS[0], strict_map_key=True)
    if len(data) <= _AT_ONCE:
        return pacing.at_once(data)
    pacing.pause()
    return _unpack(data, 0, pacing)
