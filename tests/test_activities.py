"""The activity model shared by the host and the sandbox (``corral.activities``).

What an agent sends is checked here, field by field, with messages that name the
field; :class:`Activity` and :class:`Note` are values the codec stores and reads
back as they were, and a payload made by a hostile process reads as a corrupt
value, never as an activity of the wrong shape.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import Activity, ActivityType, Note, Uuid, codec
from corral.activities import (
    MAX_PRIORITY_DEPTH,
    activity_id,
    activity_type,
    activity_update,
    covers,
    lineage,
    new_activity,
    note_content,
    priority_name,
)
from corral.errors import DecodeLimitExceeded
from corral.tagged_json import to_tagged
from tests.support import assert_identical
from tests.test_codec import datetimes, values

WHEN = dt.datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Paris"))
NOTE = Note(
    "0190b3a0-0000-7000-8000-000000000001", "**first**", "gh:comment:1", "sync-1", WHEN, WHEN
)
ACTIVITY = Activity(
    "0190b3a0-0000-7000-8000-000000000002",
    ActivityType.ACTION,
    "Fix the build",
    (NOTE, Note("0190b3a0-0000-7000-8000-000000000003", "plain")),
    "github:issue:123",
    WHEN,
    dt.date(2026, 4, 1),
    False,
    {"labels": ("ci", "bug"), "points": 3, "seen": {1, 2}, "due": dt.date(2026, 4, 2)},
    "work/acme",
    "sync-1",
    WHEN,
    WHEN + dt.timedelta(minutes=1),
)


# -- types and ids ------------------------------------------------------------------------


def test_task_is_action_under_its_other_name() -> None:
    assert ActivityType.TASK is ActivityType.ACTION
    assert [t.value for t in ActivityType] == ["note", "action", "event"]
    for name in ("task", "TASK", "Action", "action"):
        assert activity_type(name, "type") is ActivityType.ACTION
    assert activity_type(ActivityType.TASK, "type") is ActivityType.ACTION


def test_uuids_are_version_7_and_carry_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    made = [uuid.UUID(Uuid.generate()) for _ in range(100)]
    after = time.time_ns() // 1_000_000
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in made)
    assert all(before <= u.int >> 80 <= after for u in made)  # the first 48 bits: ms
    assert len(set(made)) == 100
    assert activity_id(str(made[0]).upper()) == str(made[0])  # the canonical form
    assert activity_id(made[0]) == str(made[0])


@pytest.mark.parametrize("value", ["abc", "", 5, None, "x" * 100, b"0" * 16])
def test_an_id_that_is_not_a_uuid_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"^get_activity: id must be a UUID such as Uuid"):
        activity_id(value, "get_activity: id")


# -- priorities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["work", "work/acme", "a.b-c_d/E9", "/".join("abcdefgh"), "x" * 64, "0"]
)
def test_priority_names(name: str) -> None:
    assert priority_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "work/",
        "/work",
        "work//acme",
        "Work Stuff",
        "-work",
        "work/.hidden",
        "work/../home",
        "x" * 65,
        "/".join("abcdefghi"),  # 9 levels
        "/".join(["abcdefghijklmnopqrstuvwxy"] * 8) + "z",  # 8 levels, 207 characters
        "wörk",
        "work\n",
    ],
)
def test_a_malformed_priority_name_is_refused_saying_what_one_is(name: str) -> None:
    message = (
        f"--priority {name[:80]!r} is not a priority name: use letters, digits, '_', '.' "
        f"and '-', nested with '/' (such as 'work/acme'), at most {MAX_PRIORITY_DEPTH} "
        "levels and 200 characters"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        priority_name(name, "--priority")


def test_a_priority_name_must_be_a_str() -> None:
    with pytest.raises(ValueError, match=r"^priority must be a str such as 'work' or "):
        priority_name(["work"])


def test_a_priority_covers_itself_and_what_is_under_it_only() -> None:
    assert lineage("work/acme/web") == ["work", "work/acme", "work/acme/web"]
    assert covers("work", "work")
    assert covers("work", "work/acme/web")
    assert not covers("work", "workshop")  # a prefix of the name is not a parent
    assert not covers("work/acme", "work")
    assert not covers("work/acme", "work/other")
    assert not covers("home", "work")


# -- what an agent sends ------------------------------------------------------------------


def test_a_new_activity_keeps_only_the_fields_given() -> None:
    given = new_activity(
        {"type": "task", "title": "t", "source": "s", "notes": [NOTE, {"content": "c"}]}, "x"
    )
    assert given == {
        "type": ActivityType.ACTION,
        "title": "t",
        "source": "s",
        "notes": [
            {"id": NOTE.id, "key": NOTE.key, "content": NOTE.content},
            {"content": "c", "key": None},
        ],
    }


NAIVE = dt.datetime(2026, 1, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (5, "activities[2] must be a dict of activity fields, got int"),
        (ACTIVITY, "activities[2] must be a dict of activity fields, got Activity"),
        ({"title": "x"}, "activities[2]: 'type' is required: ActivityType.ACTION, "
                         "ActivityType.EVENT or ActivityType.NOTE"),
        ({"type": "note", "colour": "red"}, "activities[2]: unknown field 'colour'; the fields "
         "are id, type, title, notes, source, start, end, done, meta, priority"),
        ({"type": "note", "author": "me"}, "activities[2]: unknown field 'author'; the fields "
         "are id, type, title, notes, source, start, end, done, meta, priority"),
        ({"type": "chore"}, "activities[2].type must be ActivityType.ACTION, ActivityType.EVENT "
         "or ActivityType.NOTE (TASK is ACTION), got 'chore'"),
        ({"type": 1}, "activities[2].type must be ActivityType.ACTION, ActivityType.EVENT "
         "or ActivityType.NOTE (TASK is ACTION), got 1"),
        ({"type": "note", "title": 5},
         "activities[2].title must be a str of at most 1000 characters, got 5"),
        ({"type": "note", "title": "x" * 1001}, "activities[2].title must be a str of at most "
         f"1000 characters, got {repr('x' * 1001)[:57]}..."),
        ({"type": "note", "id": "abc"},
         "activities[2].id must be a UUID such as Uuid.generate() gives, got 'abc'"),
        ({"type": "note", "source": ""},
         "activities[2].source must not be empty: use None for an activity with no source"),
        ({"type": "note", "source": 5},
         "activities[2].source must be a str of at most 500 characters or None, got 5"),
        ({"type": "note", "source": "s" * 501}, "activities[2].source must be a str of at most "
         f"500 characters or None, got {repr('s' * 501)[:57]}..."),
        ({"type": "note", "start": NAIVE}, "activities[2].start must be a timezone-aware "
         "datetime, a date (all day) or None, got datetime.datetime(2026, 1, 1, 0, 0)"),
        ({"type": "note", "end": "2026-01-01"}, "activities[2].end must be a timezone-aware "
         "datetime, a date (all day) or None, got '2026-01-01'"),
        ({"type": "action", "done": "yes"}, "activities[2].done must be True or False, got 'yes'"),
        ({"type": "action", "done": 1}, "activities[2].done must be True or False, got 1"),
        ({"type": "note", "meta": [1]},
         "activities[2].meta must be a dict with str keys, got list"),
        ({"type": "note", "notes": "hi"}, "activities[2].notes must be a list of notes, got str"),
        ({"type": "note", "notes": [5]},
         "activities[2].notes[0] must be a dict with 'content' (and 'id', 'key'), got int"),
        ({"type": "note", "notes": [{"key": "k"}]},
         "activities[2].notes[0]: 'content' is required"),
        ({"type": "note", "title": "a\x00b"},
         "activities[2].title contains a NUL character (\\x00); remove it"),
        ({"type": "note", "notes": [{"content": "\x00"}]},
         "activities[2].notes[0]: content contains a NUL character (\\x00); remove it"),
        ({"type": "note", "notes": [{"content": "c", "colour": 1}]},
         "activities[2].notes[0]: unknown field 'colour'; the fields are id, key, content"),
        ({"type": "note", "notes": [{"content": 5}]},
         "activities[2].notes[0]: content must be a str (markdown), got int"),
        ({"type": "note", "notes": [{"content": "c", "key": 5}]},
         "activities[2].notes[0]: key must be a str of at most 200 characters or None, got 5"),
        ({"type": "note", "notes": [{"content": "c", "id": "x"}]},
         "activities[2].notes[0].id must be a UUID such as Uuid.generate() gives, got 'x'"),
        ({"type": "note", "priority": "Work Stuff"}, "activities[2].priority 'Work Stuff' is not "
         "a priority name: use letters, digits, '_', '.' and '-', nested with '/' (such as "
         "'work/acme'), at most 8 levels and 200 characters"),
        ({"type": "note", "priority": 5},
         "activities[2].priority must be a str such as 'work' or 'work/acme', got int"),
    ],
)  # fmt: skip
def test_a_bad_field_is_refused_naming_it(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        new_activity(data, "activities[2]")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": 1}, "update_activity: 'id' cannot be changed: id is set by Corral"),
        ({"source": "x"}, "update_activity: 'source' cannot be changed: a source is an "
         "activity's external identity and never changes"),
        ({"notes": []}, "update_activity: 'notes' cannot be changed: add notes with "
         "add_note(activity_id, content, key=...)"),
        ({"created_at": WHEN}, "update_activity: 'created_at' cannot be changed: created_at is "
         "set by Corral"),
        ({"colour": 1}, "update_activity: unknown field 'colour'; the fields are type, title, "
         "start, end, done, meta, priority"),
        ({"title": None}, "update_activity.title must be a str of at most 1000 characters, "
         "got None"),
        ({"start": NAIVE}, "update_activity.start must be a timezone-aware datetime, a date "
         "(all day) or None, got datetime.datetime(2026, 1, 1, 0, 0)"),
    ],
)  # fmt: skip
def test_an_update_names_the_field_it_cannot_change(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        activity_update(changes)


def test_a_notes_content_and_key_are_checked() -> None:
    assert note_content("**hi**", None) == ("**hi**", None)
    assert note_content("", "k") == ("", "k")
    with pytest.raises(ValueError, match=r"^add_note: content must be a str \(markdown\), got"):
        note_content(None, None)
    with pytest.raises(ValueError, match=r"^add_note: key must be a str of at most 200 "):
        note_content("c", "k" * 201)


# -- values: stored by the codec, read back as they were ----------------------------------


def round_trip(value: Any) -> Any:
    return codec.decode(codec.encode(value))


def test_an_activity_and_its_notes_read_back_identical() -> None:
    for value in (
        ACTIVITY,
        NOTE,
        [ACTIVITY, {"a": (NOTE, ACTIVITY)}],
        Activity("x", ActivityType.EVENT, ""),
    ):
        assert_identical(value, round_trip(value))
    back = round_trip(ACTIVITY)
    assert back.type is ActivityType.ACTION
    assert back == ACTIVITY


optional_text = st.none() | st.text(max_size=8)
optional_time = st.none() | datetimes
notes = st.builds(
    Note, st.text(max_size=8), st.text(max_size=20), optional_text, optional_text,
    optional_time, optional_time,
)  # fmt: skip
activities = st.builds(
    Activity,
    st.text(max_size=8),
    st.sampled_from(ActivityType),
    st.text(max_size=20),
    st.lists(notes, max_size=3).map(tuple),
    optional_text,
    st.none() | datetimes | st.dates(),
    st.none() | datetimes | st.dates(),
    st.none() | st.booleans(),
    st.none() | st.dictionaries(st.text(max_size=4), values, max_size=3),
    st.text(max_size=8),
    optional_text,
    optional_time,
    optional_time,
)


@given(st.one_of(activities, notes, st.lists(activities | notes, max_size=3)))
def test_every_activity_round_trips_by_either_route(value: Any) -> None:
    assert_identical(value, round_trip(value))
    assert codec.encode(value) == codec._pack(codec._Encoder().walk(value, (None, "value")))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Activity("x", ActivityType.NOTE, 5), "value: an Activity's title must be str, got int"),  # type: ignore[arg-type]
        (Activity(uuid.UUID(int=1), ActivityType.NOTE, ""),  # type: ignore[arg-type]
         "value: an Activity's id must be str, got UUID"),
        (Activity("x", "note", ""), "value: an Activity's type must be an ActivityType, "  # type: ignore[arg-type]
         "got 'note'"),
        (Activity("x", ActivityType.NOTE, "", ({"content": "c"},)),  # type: ignore[arg-type]
         "value: an Activity's notes must be Notes, got dict"),
        (Activity("x", ActivityType.NOTE, "", done=0),  # type: ignore[arg-type]
         "value: an Activity's done must be bool or None, got int"),
        (Activity("x", ActivityType.NOTE, "", created_at=dt.date(2026, 1, 1)),  # type: ignore[arg-type]
         "value: an Activity's created_at must be datetime or None, got date"),
        (Activity("x", ActivityType.NOTE, "", meta=[1]),  # type: ignore[arg-type]
         "value: an Activity's meta must be dict or None, got list"),
        ([Note("n", b"c")], "value[0]: a Note's content must be str, got bytes"),  # type: ignore[arg-type]
        (Activity("x", ActivityType.NOTE, "", meta={"k": object()}),
         "value.meta['k']: cannot store an object of type object; store its fields as a dict"),
    ],
)  # fmt: skip
def test_an_activity_that_would_not_read_back_is_refused_when_written(
    value: Any, message: str
) -> None:
    # Decoding checks every field (the bytes may come from a sandbox); writing
    # what it would refuse would store a value its owner can never read again.
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        codec.encode(value)


def _ext(code: int, items: list[Any]) -> bytes:
    return codec._packed(msgpack.ExtType(code, codec._packed(items)))


def _fields(activity: Activity, **changes: Any) -> list[Any]:
    fields = msgpack.unpackb(msgpack.unpackb(codec.encode(activity)).data, raw=False)
    names = list(Activity.__dataclass_fields__)
    for name, value in changes.items():
        fields[names.index(name)] = value
    return list(fields)


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="no-fields"),
        pytest.param(_fields(ACTIVITY)[:-1], id="twelve-fields"),
        pytest.param([*_fields(ACTIVITY), None], id="fourteen-fields"),
        pytest.param(_fields(ACTIVITY, type="chore"), id="unknown-type"),
        pytest.param(_fields(ACTIVITY, type=["note"]), id="type-a-list"),
        pytest.param(_fields(ACTIVITY, title=5), id="title-an-int"),
        pytest.param(_fields(ACTIVITY, notes=[{"content": "c"}]), id="note-a-dict"),
        pytest.param(_fields(ACTIVITY, notes="abc"), id="notes-a-str"),
        pytest.param(_fields(ACTIVITY, done=1), id="done-an-int"),
        pytest.param(_fields(ACTIVITY, meta=[1, 2]), id="meta-a-list"),
        pytest.param(_fields(ACTIVITY, start="2026-01-01"), id="start-a-str"),
        pytest.param(_fields(ACTIVITY, created_at=0), id="created-an-int"),
    ],
)
def test_a_crafted_activity_payload_reads_as_a_corrupt_value(items: list[Any]) -> None:
    with pytest.raises(ValueError, match=r"^corrupt stored value: bad payload for extension "):
        codec.decode(_ext(11, items))


def test_a_crafted_note_payload_reads_as_a_corrupt_value() -> None:
    for items in ([], ["id", 5, None, None, None, None], ["id", "c", 1, None, None, None]):
        with pytest.raises(ValueError, match=r"^corrupt stored value: bad payload for .* 12$"):
            codec.decode(_ext(12, items))
    # A note where an activity belongs is caught too (each record checks its own fields).
    with pytest.raises(ValueError, match="corrupt stored value"):
        codec.decode(_ext(11, _fields(ACTIVITY, id=msgpack.ExtType(12, b"\x90"))))


def test_activities_nested_in_their_own_meta_are_refused_past_the_depth_limit() -> None:
    inner: Any = None
    for _ in range(200):
        inner = msgpack.ExtType(11, codec._packed(_fields(ACTIVITY, notes=[], meta={"x": inner})))
    with pytest.raises(DecodeLimitExceeded):
        codec.decode(codec._packed(inner))


def test_an_activity_shows_as_json_with_its_types() -> None:
    # What ``corral executions`` and ``corral store get`` show for a value that holds one:
    # the object ``corral activities --json`` prints, its meta's values JSON lacks tagged.
    shown = to_tagged([ACTIVITY])
    json.dumps(shown)
    (activity,) = shown  # type: ignore[misc]
    body = activity["$activity"]  # type: ignore[index,call-overload]
    assert body == ACTIVITY.to_json()
    assert body["meta"]["labels"] == {"$tuple": ["ci", "bug"]}
    assert body["meta"]["due"] == {"$date": "2026-04-02"}
    assert (body["start"], body["end"]) == ("2026-03-29T03:30:00+02:00", "2026-04-01")
    assert to_tagged(NOTE) == {"$note": NOTE.to_json()}


def test_to_json_gives_iso_times_and_the_type_by_value() -> None:
    shown = ACTIVITY.to_json()
    json.dumps(shown)
    assert (shown["type"], shown["start"], shown["end"]) == (
        "action",
        "2026-03-29T03:30:00+02:00",
        "2026-04-01",
    )
    assert shown["notes"][0] == {
        "id": NOTE.id,
        "key": "gh:comment:1",
        "content": "**first**",
        "author": "sync-1",
        "created_at": "2026-03-29T03:30:00+02:00",
        "updated_at": "2026-03-29T03:30:00+02:00",
    }
