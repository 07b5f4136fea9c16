"""The activity model of SPEC §1.4, shared by the host and the sandbox.

An **activity** is an item of work or information in a **priority** (``work``,
``work/acme``): a task to do, an event, a note, often mirrored from another system
(its ``source``, such as ``github:issue:123``). Agents create and update them with
``self.tools.plot``; every change is an *activity event* for the other agents of
the priority (``corral.plot``).

:class:`Activity` and :class:`Note` are values: the codec stores them as they are
(an agent may keep one in its store and read it back), and they cross the sandbox
channel the same way. This module imports nothing of the host, so the sandbox can
load it; the rules of what an agent may *send* (:func:`new_activity`,
:func:`activity_update`) are here too, beside the fields they check, and the host
applies them to everything the sandbox sends.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

__all__ = [
    "MAX_ACTIVITY_BYTES",
    "MAX_BATCH",
    "MAX_HOPS",
    "Activity",
    "ActivityType",
    "Note",
    "Uuid",
    "covers",
    "priority_name",
]

#: Activities one ``create_activities`` call may hold (the request frame bounds its bytes).
MAX_BATCH: Final = 5_000
#: What one activity may hold, encoded: title, meta and every note together. A
#: hundred of them (``find_activities``' largest page) fit in one answer.
MAX_ACTIVITY_BYTES: Final = 32 * 1024
#: Events an activity change may be away from the change no event caused: past it,
#: agents answering each other's events are in a loop, and the event is dropped.
MAX_HOPS: Final = 8
#: What a note counts towards ``MAX_ACTIVITY_BYTES`` besides its content, key and
#: author: its id, its times and their framing, about 95 bytes encoded. Counted at
#: less, a hundred activities of a few hundred empty notes each would make a page of
#: ``find_activities`` larger than a sandbox frame, and every instance that sees them
#: could no longer find any.
NOTE_OVERHEAD: Final = 128
#: Notes one activity may hold: no more fit in ``MAX_ACTIVITY_BYTES``.
MAX_NOTES: Final = MAX_ACTIVITY_BYTES // NOTE_OVERHEAD
MAX_TITLE: Final = 1_000
MAX_SOURCE: Final = 500
MAX_KEY: Final = 200
MAX_PRIORITY: Final = 200
MAX_PRIORITY_DEPTH: Final = 8

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ActivityType(enum.StrEnum):
    """What an activity is. ``TASK`` is ``ACTION`` under the seeds' earlier name."""

    NOTE = "note"
    ACTION = "action"
    EVENT = "event"
    TASK = "action"


class Uuid:
    """Ids an agent chooses itself, so that it can refer to what it creates before the
    call returns (and create the same thing again idempotently)."""

    @staticmethod
    def generate() -> str:
        """A new time-ordered UUID (version 7) as a str: ids made later sort later."""
        ms = time.time_ns() // 1_000_000
        value = (ms & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10)) & (2**80 - 1)
        value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
        return str(uuid.UUID(int=value))


@dataclass(frozen=True, slots=True)
class Note:
    """A note on an activity: markdown ``content``; a ``key`` (an external id) makes
    ``add_note`` with the same key update it instead of adding another."""

    id: str
    content: str
    key: str | None = None
    author: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "content": self.content,
            "author": self.author,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Activity:
    """An activity as it was when read (SPEC §1.4). Change one with
    ``self.tools.plot.update_activity(activity.id, title=...)``."""

    id: str
    type: ActivityType
    title: str
    notes: tuple[Note, ...] = ()
    source: str | None = None
    start: dt.datetime | dt.date | None = None
    end: dt.datetime | dt.date | None = None
    done: bool | None = None
    meta: dict[str, Any] | None = None
    priority: str = ""
    #: The instance that created it (None: created by an operator).
    author: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The activity as JSON (``corral activities --json``): times in ISO 8601, the type
        by value, and the values of ``meta`` that JSON lacks (a date, a set) tagged as
        ``corral state get`` shows them."""
        # tagged_json shows activities, so it imports this module: imported here.
        from corral.tagged_json import to_tagged

        return {
            "id": self.id,
            "type": self.type.value,
            "title": self.title,
            "source": self.source,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "done": self.done,
            "meta": to_tagged(self.meta),
            "priority": self.priority,
            "author": self.author,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "notes": [note.to_json() for note in self.notes],
        }


#: The fields an activity change may name, as ``update_activity`` takes them.
UPDATABLE: Final = ("type", "title", "start", "end", "done", "meta", "priority")
#: The fields a new activity may have.
NEW_FIELDS: Final = ("id", "type", "title", "notes", "source", *UPDATABLE[2:])
#: The fields a note of a new activity may have.
NOTE_FIELDS: Final = ("id", "key", "content")


# -- the codec's view: a value as a list of its fields, and back ---------------------------


def record_fields(value: Activity | Note) -> list[Any]:
    """The values the codec stores for ``value``, in field order (a type as its value).

    ``TypeError`` for a field that decoding would refuse (``Activity(title=5)``, a dict
    among its notes): an agent that builds one by hand learns so as it stores it, not
    when it reads back a value it can never read again."""
    items = [getattr(value, f.name) for f in fields(value)]
    if isinstance(value, Activity):
        kind = value.type
        if type(kind) is not ActivityType:
            raise TypeError(f"an Activity's type must be an ActivityType, got {_repr(kind)}")
        items[1] = kind.value
        if type(value.notes) in (tuple, list):
            items[3] = list(value.notes)
        activity_from_fields(items)
    else:
        note_from_fields(items)
    return items


_TEXT: Final = (str,)
_OPTIONAL_TEXT: Final = (str, type(None))
_OPTIONAL_TIME: Final = (dt.datetime, type(None))


def note_from_fields(items: list[Any]) -> Note:
    """A :class:`Note` from :func:`record_fields`' list, every type checked: the bytes
    may come from a sandbox."""
    _expect(len(items) == 6, "a Note has 6 fields")
    note_id, content, key, author, created, updated = items
    for name, item, kinds in (
        ("id", note_id, _TEXT), ("content", content, _TEXT), ("key", key, _OPTIONAL_TEXT),
        ("author", author, _OPTIONAL_TEXT), ("created_at", created, _OPTIONAL_TIME),
        ("updated_at", updated, _OPTIONAL_TIME),
    ):  # fmt: skip
        _typed("Note", name, item, kinds)
    return Note(note_id, content, key, author, created, updated)


def activity_from_fields(items: list[Any]) -> Activity:
    """An :class:`Activity` from :func:`record_fields`' list, every type checked."""
    _expect(len(items) == 13, "an Activity has 13 fields")
    (aid, kind, title, notes, source, start, end, done, meta, priority, author, created,
     updated) = items  # fmt: skip
    span = (dt.datetime, dt.date, type(None))
    for name, item, kinds in (
        ("id", aid, _TEXT), ("title", title, _TEXT), ("source", source, _OPTIONAL_TEXT),
        ("start", start, span), ("end", end, span), ("done", done, (bool, type(None))),
        ("meta", meta, (dict, type(None))), ("priority", priority, _TEXT),
        ("author", author, _OPTIONAL_TEXT), ("created_at", created, _OPTIONAL_TIME),
        ("updated_at", updated, _OPTIONAL_TIME),
    ):  # fmt: skip
        _typed("Activity", name, item, kinds)
    _expect(type(notes) is list, "an Activity's notes must be a tuple of Notes")
    for note in notes:
        _expect(type(note) is Note, f"an Activity's notes must be Notes, got {_kind(note)}")
    _expect(
        type(kind) is str and kind in ActivityType._value2member_map_,
        f"an Activity's type must be an ActivityType, got {_repr(kind)}",
    )
    return Activity(
        aid, ActivityType(kind), title, tuple(notes), source, start, end, done, meta, priority,
        author, created, updated,
    )  # fmt: skip


def _typed(record: str, name: str, value: object, kinds: tuple[type, ...]) -> None:
    if type(value) not in kinds:
        allowed = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
        article = "an" if record == "Activity" else "a"
        raise TypeError(f"{article} {record}'s {name} must be {allowed}, got {_kind(value)}")


def _expect(condition: bool, message: str) -> None:
    """A TypeError, which the codec reports as a corrupt value of the record's type (and
    as the reason it will not store one)."""
    if not condition:
        raise TypeError(message)


# -- priorities -------------------------------------------------------------------------


def priority_name(value: object, what: str = "priority") -> str:
    """``value`` if it names a priority: segments of letters, digits, ``_ . -``, joined
    by ``/``, at most 8 deep and 200 characters; else ``ValueError`` saying which."""
    if type(value) is not str:
        raise ValueError(f"{what} must be a str such as 'work' or 'work/acme', got {_kind(value)}")
    segments = value.split("/")
    if (
        len(value) > MAX_PRIORITY
        or len(segments) > MAX_PRIORITY_DEPTH
        or not all(_SEGMENT.fullmatch(s) for s in segments)
    ):
        raise ValueError(
            f"{what} {value[:80]!r} is not a priority name: use letters, digits, '_', '.' "
            f"and '-', nested with '/' (such as 'work/acme'), at most {MAX_PRIORITY_DEPTH} "
            f"levels and {MAX_PRIORITY} characters"
        )
    return value


def lineage(priority: str) -> list[str]:
    """The priority and every priority above it, outermost first: ``work/acme`` gives
    ``['work', 'work/acme']``. An instance of any of them sees ``priority``'s activities."""
    segments = priority.split("/")
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]


def covers(priority: str, other: str) -> bool:
    """Whether an instance of ``priority`` sees the activities of ``other``."""
    return other == priority or other.startswith(priority + "/")


# -- what an agent sends ------------------------------------------------------------------


def new_activity(data: object, where: str) -> dict[str, Any]:
    """The fields an agent gave for a new activity, each checked; ``where`` names it in
    errors (``activity``, ``activities[3]``). Only what was given: creating by a source
    that exists changes those fields alone. The host fills in the rest, and checks
    the fields together (``check_done``, ``check_span``) once it knows them all."""
    if type(data) is not dict:
        raise ValueError(f"{where} must be a dict of activity fields, got {_kind(data)}")
    _known(data, NEW_FIELDS, where)
    if "type" not in data:
        raise ValueError(
            f"{where}: 'type' is required: ActivityType.ACTION, ActivityType.EVENT or "
            "ActivityType.NOTE"
        )
    fields_ = {name: _checked(name, data[name], where) for name in data if name != "notes"}
    notes = data.get("notes", [])
    if type(notes) is not list:
        raise ValueError(f"{where}.notes must be a list of notes, got {_kind(notes)}")
    if len(notes) > MAX_NOTES:
        raise ValueError(
            f"{where}.notes has {len(notes):,} notes; an activity holds at most {MAX_NOTES}"
        )
    fields_["notes"] = [_new_note(note, f"{where}.notes[{i}]") for i, note in enumerate(notes)]
    return fields_


def activity_update(
    changes: Mapping[str, object], where: str = "update_activity"
) -> dict[str, Any]:
    """The fields an ``update_activity`` call changes, checked."""
    for name in changes:
        if name in ("id", "source", "notes", "author", "created_at", "updated_at"):
            reason = {
                "notes": "add notes with add_note(activity_id, content, key=...)",
                "source": "a source is an activity's external identity and never changes",
            }.get(name, f"{name} is set by Corral")
            raise ValueError(f"{where}: {name!r} cannot be changed: {reason}")
    _known(changes, UPDATABLE, where)
    return {name: _checked(name, value, where) for name, value in changes.items()}


def note_content(content: object, key: object, where: str = "add_note") -> tuple[str, str | None]:
    """A note's content and key as ``add_note`` takes them, checked."""
    if type(content) is not str:
        raise ValueError(f"{where}: content must be a str (markdown), got {_kind(content)}")
    return no_nul(content, f"{where}: content"), _optional_text(key, MAX_KEY, f"{where}: key")


def activity_type(value: object, at: str) -> ActivityType:
    """An :class:`ActivityType`, or its name as a str (``"task"`` is ``ACTION``)."""
    if isinstance(value, ActivityType):
        return value
    if type(value) is str and value.lower() in ("note", "action", "event", "task"):
        return ActivityType(value.lower().replace("task", "action"))
    raise ValueError(
        f"{at} must be ActivityType.ACTION, ActivityType.EVENT or ActivityType.NOTE "
        f"(TASK is ACTION), got {_repr(value)}"
    )


def activity_id(value: object, where: str = "id") -> str:
    """An activity or note id: a UUID (``Uuid.generate()``), in its canonical form."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value) is str and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise ValueError(f"{where} must be a UUID such as Uuid.generate() gives, got {_repr(value)}")


def _new_note(note: object, where: str) -> dict[str, Any]:
    if type(note) is Note:
        note = {"id": note.id, "key": note.key, "content": note.content}
    if type(note) is not dict:
        raise ValueError(
            f"{where} must be a dict with 'content' (and 'id', 'key'), got {_kind(note)}"
        )
    _known(note, NOTE_FIELDS, where)
    if "content" not in note:
        raise ValueError(f"{where}: 'content' is required")
    content, key = note_content(note["content"], note.get("key"), where)
    checked: dict[str, Any] = {"content": content, "key": key}
    if note.get("id") is not None:
        checked["id"] = activity_id(note["id"], f"{where}.id")
    return checked


def _checked(name: str, value: object, where: str) -> Any:
    at = f"{where}.{name}"
    if name == "id":
        return activity_id(value, at)
    if name == "type":
        return activity_type(value, at)
    if name == "title":
        if type(value) is not str or len(value) > MAX_TITLE:
            raise ValueError(
                f"{at} must be a str of at most {MAX_TITLE} characters, got {_repr(value)}"
            )
        return no_nul(value, at)
    if name == "source":
        source = _optional_text(value, MAX_SOURCE, at)
        if source == "":
            raise ValueError(f"{at} must not be empty: use None for an activity with no source")
        return source
    if name in ("start", "end"):
        if value is None or type(value) is dt.date:
            return value
        if type(value) is dt.datetime and value.tzinfo is not None:
            return value
        raise ValueError(
            f"{at} must be a timezone-aware datetime, a date (all day) or None, got {_repr(value)}"
        )
    if name == "done":
        if value is None or type(value) is bool:
            return value
        raise ValueError(f"{at} must be True or False, got {_repr(value)}")
    if name == "meta":
        if value is None:
            return None
        if type(value) is not dict or not all(type(k) is str for k in value):
            raise ValueError(f"{at} must be a dict with str keys, got {_kind(value)}")
        return value
    assert name == "priority"
    return priority_name(value, at)


def check_done(kind: ActivityType, done: object, where: str) -> None:
    if done is not None and kind is not ActivityType.ACTION:
        raise ValueError(f"{where}.done: only an ACTION can be done; this is a {kind.name}")


def check_span(start: object, end: object, where: str) -> None:
    if start is None or end is None or type(start) is not type(end):
        return
    if end < start:  # type: ignore[operator]
        raise ValueError(f"{where}.end ({end}) is before its start ({start})")


def _known(data: Iterable[object], allowed: tuple[str, ...], where: str) -> None:
    for name in data:
        if name not in allowed:
            raise ValueError(
                f"{where}: unknown field {_repr(name)}; the fields are {', '.join(allowed)}"
            )


def _optional_text(value: object, limit: int, at: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) > limit:
        raise ValueError(
            f"{at} must be a str of at most {limit} characters or None, got {_repr(value)}"
        )
    return no_nul(value, at)


def no_nul(text: str, at: str) -> str:
    """``text``, unless it holds a NUL, which PostgreSQL cannot keep in text: refused on
    every database alike, as a store key's is."""
    if "\x00" in text:
        raise ValueError(f"{at} contains a NUL character (\\x00); remove it")
    return text


def _kind(value: object) -> str:
    return type(value).__name__


def _repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return None if value is None else value.isoformat()
