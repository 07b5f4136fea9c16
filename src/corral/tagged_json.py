"""Show stored values as JSON, keeping the types JSON lacks in a tagged form.

For people and scripts reading state through the CLI or the admin API: a tuple,
a set, bytes or a datetime must not silently turn into a list or a string, so
each travels as a one-key object such as ``{"$tuple": [...]}``. An integer
JavaScript cannot hold exactly is ``{"$int": "..."}``: decimal digits, or ``0x``
and hexadecimal ones past 14,000 bits (Python's ``int(text, 0)`` reads both). A plain dict
whose keys start with ``$`` is wrapped in ``{"$dict": ...}`` so it cannot be
mistaken for a tag. An activity or a note (``corral.activities``) is
``{"$activity": {field: value, ...}}`` or ``{"$note": {...}}``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import uuid
from decimal import Decimal
from typing import Any

from corral.activities import Activity, Note

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

# Integers beyond this lose precision in JavaScript and many JSON parsers.
_SAFE_INT = 2**53
# Integers up to this size are written in decimal: well within the 4,300 digits Python
# converts by default, and in microseconds. Larger ones are written in hexadecimal,
# whose conversion takes linear time: a 1 MiB integer in decimal takes minutes.
_DECIMAL_MAX_BITS = 14_000
#: The codec's records, each shown as a one-key object of its fields.
_RECORDS: dict[type, str] = {Activity: "$activity", Note: "$note"}


def to_tagged(value: Any) -> JsonValue:
    """A JSON-compatible rendering of any value the codec accepts."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value  # type: ignore[no-any-return]
        big = value.bit_length() > _DECIMAL_MAX_BITS
        return {"$int": hex(value) if big else str(value)}
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is list:
        return [to_tagged(item) for item in value]
    if kind is dict:
        body = {key: to_tagged(item) for key, item in value.items()}
        return {"$dict": body} if any(key.startswith("$") for key in value) else body
    if kind is tuple:
        return {"$tuple": [to_tagged(item) for item in value]}
    if kind is set or kind is frozenset:
        items = sorted((to_tagged(item) for item in value), key=repr)
        return {"$set" if kind is set else "$frozenset": items}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode()}
    if kind is dt.datetime:
        return {"$datetime": value.isoformat(), **_zone(value.tzinfo)}
    if kind is dt.date:
        return {"$date": value.isoformat()}
    if kind is dt.time:
        return {"$time": value.isoformat(), **_zone(value.tzinfo)}
    if kind is dt.timedelta:
        return {"$timedelta": value.total_seconds()}
    if kind is Decimal:
        return {"$decimal": str(value)}
    if kind is uuid.UUID:
        return {"$uuid": str(value)}
    if kind in _RECORDS:
        return {
            _RECORDS[kind]: {
                field.name: _field(getattr(value, field.name))
                for field in dataclasses.fields(value)
            }
        }
    raise TypeError(f"cannot show a value of type {kind.__name__} as JSON")


def _field(value: Any) -> JsonValue:
    """A record's field: its enums (an activity's type) as their text."""
    return value.value if isinstance(value, enum.Enum) else to_tagged(value)


def _zone(tz: dt.tzinfo | None) -> dict[str, str]:
    key = getattr(tz, "key", None)  # a zoneinfo.ZoneInfo names its IANA zone
    return {"zone": key} if isinstance(key, str) else {}
