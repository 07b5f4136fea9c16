"""Values shown as JSON keep the types JSON lacks, so a reader can tell them apart."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from corral import codec
from corral.activities import Activity, ActivityType, Note
from corral.tagged_json import to_tagged


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, None),
        (True, True),
        (2**53, 2**53),
        (2**53 + 1, {"$int": str(2**53 + 1)}),
        (float("inf"), {"$float": "inf"}),
        ((1, "a"), {"$tuple": [1, "a"]}),
        ({3, 1, 2}, {"$set": [1, 2, 3]}),
        (frozenset({"x"}), {"$frozenset": ["x"]}),
        (b"\x00\xff", {"$bytes": "AP8="}),
        (dt.date(2026, 1, 2), {"$date": "2026-01-02"}),
        (dt.timedelta(minutes=1.5), {"$timedelta": 90.0}),
        (Decimal("1.10"), {"$decimal": "1.10"}),
        (uuid.UUID(int=1), {"$uuid": "00000000-0000-0000-0000-000000000001"}),
        ({"$tuple": 1}, {"$dict": {"$tuple": 1}}),
        ({"a": [1, {"b": (2,)}]}, {"a": [1, {"b": {"$tuple": [2]}}]}),
    ],
)
def test_tagged_forms(value: object, shown: object) -> None:
    assert to_tagged(value) == shown
    json.dumps(to_tagged(value))  # always valid JSON


def test_datetime_keeps_offset_and_zone_name() -> None:
    when = dt.datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Paris"))
    assert to_tagged(when) == {"$datetime": "2026-03-29T03:30:00+02:00", "zone": "Europe/Paris"}
    assert to_tagged(dt.datetime(2026, 1, 1)) == {"$datetime": "2026-01-01T00:00:00"}


def test_an_integer_of_any_size_reads_back_exactly() -> None:
    """Python writes at most 4,300 decimal digits of an int, and takes minutes for the
    2.5 million digits of one that fills a stored value: those are written in hex."""
    assert to_tagged(-(2**13_999)) == {"$int": str(-(2**13_999))}  # 14,000 bits: decimal
    assert to_tagged(2**14_000) == {"$int": hex(2**14_000)}  # past them: hexadecimal
    for value in (10**4299, 10**5000, -(10**5000), (1 << (8 << 20)) - 1):
        tagged = to_tagged(value)
        assert isinstance(tagged, dict)
        assert int(json.loads(json.dumps(tagged))["$int"], 0) == value


def test_unknown_type_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot show a value of type object"):
        to_tagged(object())


def test_an_activity_and_its_notes_show_as_records_of_their_fields() -> None:
    """The codec stores activities and notes (an agent may keep one in its store): they
    show as what they are, each field tagged as any value is."""
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    activity = Activity(
        id="a1",
        type=ActivityType.EVENT,
        title="launch",
        notes=(Note(id="n1", content="go", created_at=when),),
        start=dt.date(2026, 1, 3),
        meta={"tags": ("x",)},
    )
    shown = to_tagged(codec.decode(codec.encode(activity)))
    assert shown == {
        "$activity": {
            "id": "a1",
            "type": "event",
            "title": "launch",
            "notes": {
                "$tuple": [
                    {
                        "$note": {
                            "id": "n1",
                            "content": "go",
                            "key": None,
                            "author": None,
                            "created_at": {"$datetime": "2026-01-02T00:00:00+00:00"},
                            "updated_at": None,
                        }
                    }
                ]
            },
            "source": None,
            "start": {"$date": "2026-01-03"},
            "end": None,
            "done": None,
            "meta": {"tags": {"$tuple": ["x"]}},
            "priority": "",
            "author": None,
            "created_at": None,
            "updated_at": None,
        }
    }
    json.dumps(shown)
