"""Activities and notes in priorities (SPEC §1.4), and the events their changes cause.

:class:`Plot` (``services.plot``) is what operators read (``corral activities``,
``corral priorities``); :meth:`Plot.bound` gives one execution its
``self.tools.plot``, an :class:`InstancePlot` that sees the instance's priority and
the priorities under it, and nothing else.

Every change (a new activity, an update that changes something, a note added or
changed) queues ``on_activity(activity, changes)`` for every *other* instance whose
priority covers the activity's, in the same transaction as the change: a crash
loses both or neither. An event's task carries, after the two arguments, its
origin (:class:`Cause`): how many events away it is from a change no event caused,
and which instance's change it announces. An execution running an event at hop 8
changes what it likes, but its changes announce nothing, and the instance's log
says which two agents were answering each other.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from corral import activities, codec
from corral.activities import (
    MAX_ACTIVITY_BYTES,
    MAX_BATCH,
    MAX_HOPS,
    NOTE_OVERHEAD,
    Activity,
    ActivityType,
    Note,
    Uuid,
    activity_id,
    activity_type,
    check_done,
    check_span,
    covers,
    lineage,
    priority_name,
)
from corral.db import bridge
from corral.db.activities import ActivityDatabase, Row
from corral.db.raw import Database
from corral.errors import QuotaExceeded, UnknownActivity, UnknownPriority
from corral.quotas import Quotas
from corral.runtime.history import History
from corral.tasks.queue import TaskQueue

log = logging.getLogger("corral.plot")

#: The method an activity event calls.
EVENT_METHOD: Final = "on_activity"
#: The most one plot call may answer, encoded: the sandbox channel's frames are
#: 4 MiB (``sandbox.protocol.MAX_FRAME``), and an answer must fit in one.
MAX_ANSWER_BYTES: Final = 3 * 1024 * 1024
#: What an activity costs in an answer beyond what ``size`` counts (ids, times, names).
_OVERHEAD: Final = 1024
#: ``find_activities``' largest page: a hundred activities fit in one answer.
MAX_FIND: Final = 100

#: Resolves (agent, version number) to the methods that version defines.
MethodsOf = Callable[[str, int], frozenset[str]]


@dataclass(frozen=True)
class Cause:
    """What an execution was running, as the events its changes cause need to know:
    the hop count of the activity event it ran (0: it ran no event), and the instance
    whose change that event announced."""

    hops: int = 0
    by: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"hops": self.hops, "by": self.by}

    @classmethod
    def of_event(cls, args: list[Any]) -> tuple[list[Any], Cause]:
        """An event task's arguments for ``on_activity``, and its origin (the last one)."""
        *call, origin = args
        return call, cls(int(origin["hops"]), origin["by"])


#: An execution that runs no activity event.
NO_CAUSE: Final = Cause()


@dataclass(frozen=True)
class Priority:
    """A priority as ``corral priorities`` lists it."""

    name: str
    created_at: int
    instances: int
    activities: int


@dataclass(frozen=True)
class _Author:
    """Who makes a change: the instance of an execution, and what that execution ran."""

    instance: str
    agent: str
    priority: str
    cause: Cause


@dataclass
class _Change:
    """One activity as a call leaves it, and the event it causes (``changes``), if any."""

    activity: Activity
    size: int
    new: bool
    previous: Activity | None = None
    fields: tuple[str, ...] = ()
    note: Note | None = None
    notes_added: tuple[Note, ...] = ()
    notes_changed: tuple[Note, ...] = ()

    @property
    def changed(self) -> bool:
        return self.new or bool(self.fields)

    def event_changes(self) -> dict[str, Any] | None:
        if self.new:
            return None
        return {"previous": self.previous, "fields": list(self.fields), "note": self.note}


class Plot:
    """Priorities, activities and notes over the database, and their events."""

    def __init__(
        self,
        database: Database,
        queue: TaskQueue,
        history: History,
        *,
        methods_of: MethodsOf,
        quotas: Quotas,
    ) -> None:
        self.database = database
        self.queue = queue
        self.history = history
        self.quotas = quotas
        self._db = ActivityDatabase(database)
        self._methods_of = methods_of

    # -- what operators see -------------------------------------------------------------

    def add_priority(self, name: str, *, now: int) -> str:
        """The priority ``name`` and those above it, made if missing (an install, or
        ``corral priorities create``); ``ValueError`` for a malformed name."""
        name = priority_name(name)
        self._db.add_priorities(lineage(name), now=now)
        return name

    def priorities(self, *, after: str | None = None, limit: int | None = None) -> list[Priority]:
        """Priorities by name; ``after``: from the name after it; ``limit``: so many."""
        return [
            Priority(str(r[0]), int(r[1]), int(r[2]), int(r[3]))
            for r in self._db.priorities(after=after, limit=limit)
        ]

    def activities(
        self,
        priority: str | None,
        *,
        limit: int,
        before: Activity | tuple[int, str] | None = None,
    ) -> list[Activity]:
        """Activities of ``priority`` and those under it (of all, if None), most recently
        changed first; ``before``: the page after that activity (or after its
        (updated_at, id))."""
        if priority is not None:
            priority = priority_name(priority)
            if not self._db.priority_exists(priority):
                raise UnknownPriority(f"there is no priority {priority!r} (see corral priorities)")
        after = (
            before
            if before is None or isinstance(before, tuple)
            else (_ms(before.updated_at), before.id)
        )
        rows = self._db.find(
            priority, type_=None, done=None, source_prefix=None, since=None, limit=limit,
            before=after,
        )  # fmt: skip
        return self._with_notes(rows)

    def activity(self, activity: str) -> Activity:
        """One activity with its notes; :class:`UnknownActivity` if there is none."""
        try:
            key = activity_id(activity, "an activity id")
        except ValueError as exc:
            raise UnknownActivity(f"{exc} (see corral activities)") from None
        found = self._with_notes(self._db.by_ids([key]))
        if not found:
            raise UnknownActivity(f"there is no activity {activity!r} (see corral activities)")
        return found[0]

    # -- what an execution's tools do ---------------------------------------------------

    def bound(
        self, instance: str, agent: str, priority: str, cause: Cause, clock: Callable[[], float]
    ) -> InstancePlot:
        """``self.tools.plot`` for one execution of ``instance``."""
        return InstancePlot(self, _Author(instance, agent, priority, cause), clock)

    def _with_notes(self, rows: Sequence[Row]) -> list[Activity]:
        notes: dict[str, list[Note]] = {}
        for row in self._db.notes_of([str(r[0]) for r in rows]):
            notes.setdefault(row[1], []).append(_note(row))
        return [_activity(row, notes.get(row[0], ())) for row in rows]

    def _write(self, author: _Author, changes: list[_Change], *, now: int) -> None:
        """Write what a call changed and queue its events, inside the caller's open
        transaction."""
        new = [c for c in changes if c.new]
        if new:
            held = self._db.count_authored(author.instance, self.quotas.activities)
            if held + len(new) > self.quotas.activities:
                raise QuotaExceeded(
                    f"this instance would have created {held + len(new):,} activities, over "
                    f"its quota of {self.quotas.activities:,}: update activities (create by "
                    "source) rather than creating new ones, or ask the operator to raise "
                    "[quotas] activities"
                )
        self._db.insert([_row(c) for c in new])
        self._db.update([_row(c) for c in changes if not c.new and c.fields])
        self._db.insert_notes([_note_row(n, c.activity.id) for c in changes for n in c.notes_added])
        for c in changes:
            for note in c.notes_changed:
                self._db.update_note(note.id, note.content, now=now)
        self._announce(author, [c for c in changes if c.changed], now=now)

    def _announce(self, author: _Author, changes: list[_Change], *, now: int) -> None:
        """Queue ``on_activity`` for every other instance that sees each change."""
        if not changes:
            return
        listeners: dict[str, list[str]] = {}
        for priority in {c.activity.priority for c in changes}:
            listeners[priority] = [
                instance
                for instance, agent, version in self._db.listeners(
                    lineage(priority), author.instance
                )
                if EVENT_METHOD in self._methods_of(agent, int(version))
            ]
        if not any(listeners.values()):
            return
        hops = author.cause.hops + 1
        if hops > MAX_HOPS:
            self._dropped(author, changes, now=now)
            return
        origin = Cause(hops, author.instance).wire()
        events: list[tuple[str, bytes]] = []
        for n, change in enumerate(changes):
            heard = listeners[change.activity.priority]
            if heard:
                args = codec.encode([change.activity, change.event_changes(), origin])
                events.extend((instance, args) for instance in heard)
            if n % 100 == 99:
                bridge.pause()
        self.queue.enqueue_events(EVENT_METHOD, events, now=now)

    def _dropped(self, author: _Author, changes: list[_Change], *, now: int) -> None:
        other = author.cause.by or "an operator"
        line = (
            f"activity event loop: {author.agent} ({author.instance}) changed "
            f"{len(changes)} activit{'y' if len(changes) == 1 else 'ies'} (first "
            f"{changes[0].activity.id}) while handling an event {MAX_HOPS} hops from its "
            f"start, last caused by {other}; the events of these changes were dropped, so "
            f"{author.agent} and {other} stop answering each other here"
        )
        log.warning("%s: %s", author.instance, line)
        self.history.log(author.instance, "warning", line, now=now)


class InstancePlot:
    """``self.tools.plot`` on the host, for one execution: every argument checked (the
    sandbox is not trusted), every read and write held to the instance's view (its
    priority and those under it)."""

    def __init__(self, plot: Plot, author: _Author, clock: Callable[[], float]) -> None:
        self._plot = plot
        self._db = plot._db
        self._author = author
        self._clock = clock
        self._view = author.priority
        self._root = author.priority.split("/")[0]

    def _now(self) -> int:
        return math.floor(self._clock() * 1000)

    # -- reads --------------------------------------------------------------------------

    def get_activity(self, activity: object) -> Activity | None:
        key = activity_id(activity, "get_activity: id")
        found = self._plot._with_notes(self._visible(self._db.by_ids([key])))
        return found[0] if found else None

    def get_activity_by_source(self, source: object) -> Activity | None:
        if type(source) is not str or not source:
            raise ValueError(
                f"get_activity_by_source: source must be a non-empty str, got {source!r:.60}"
            )
        found = self._plot._with_notes(self._visible(self._db.by_sources(self._root, [source])))
        return found[0] if found else None

    def find_activities(
        self, type_: object, done: object, source_prefix: object, since: object, limit: object
    ) -> list[Activity]:
        kind = None if type_ is None else activity_type(type_, "find_activities: type")
        if done is not None and type(done) is not bool:
            raise ValueError(f"find_activities: done must be True, False or None, got {done!r:.60}")
        if source_prefix is not None and (type(source_prefix) is not str or not source_prefix):
            raise ValueError("find_activities: source_prefix must be a non-empty str or None")
        if since is not None and not (type(since) is dt.datetime and since.tzinfo is not None):
            raise ValueError("find_activities: since must be a timezone-aware datetime or None")
        if type(limit) is not int or not 1 <= limit <= MAX_FIND:
            raise ValueError(f"find_activities: limit must be a whole number from 1 to {MAX_FIND}")
        rows = self._db.find(
            self._view,
            type_=None if kind is None else kind.value,
            done=done,
            source_prefix=source_prefix,
            since=None if since is None else _ms(since),
            limit=limit,
        )
        return self._plot._with_notes(rows)

    # -- writes -------------------------------------------------------------------------

    def create_activity(self, data: object) -> Activity:
        return self._create([data], lambda i: "create_activity")[0]

    def create_activities(self, items: object) -> list[Activity]:
        if type(items) is not list:
            raise ValueError(
                f"create_activities takes a list of activity dicts, got {type(items).__name__}"
            )
        if len(items) > MAX_BATCH:
            raise ValueError(
                f"create_activities takes at most {MAX_BATCH:,} activities in one call, got "
                f"{len(items):,}: split the batch"
            )
        return self._create(items, lambda i: f"activities[{i}]")

    def update_activity(self, activity: object, changes: object) -> Activity:
        key = activity_id(activity, "update_activity: id")
        if type(changes) is not dict:
            raise ValueError("update_activity takes the fields to change as keyword arguments")
        given = activities.activity_update(changes)
        now = self._now()
        with self._plot.database.transaction(write=True):
            self._db.lock_tree(self._root)
            current = self._read(key)
            if current is None:
                raise LookupError(
                    f"update_activity: there is no activity {key} in priority {self._view!r} "
                    "or under it"
                )
            change = self._changed(current, given, [], now, "update_activity")
            self._plot._write(self._author, [change], now=now)
        return change.activity

    def add_note(self, activity: object, content: object, key: object) -> Note:
        target = activity_id(activity, "add_note: activity_id")
        text, note_key = activities.note_content(content, key)
        now = self._now()
        with self._plot.database.transaction(write=True):
            self._db.lock_tree(self._root)
            current = self._read(target)
            if current is None:
                raise LookupError(
                    f"add_note: there is no activity {target} in priority {self._view!r} "
                    "or under it"
                )
            change = self._changed(
                current, {}, [{"content": text, "key": note_key}], now, "add_note"
            )
            self._plot._write(self._author, [change], now=now)
        if change.note is not None:
            return change.note
        # Nothing changed: the note with that key (or content) as it is.
        return next(
            n for n in change.activity.notes
            if (n.key == note_key if note_key is not None else n.content == text)
        )  # fmt: skip

    # -- the rules ----------------------------------------------------------------------

    def _create(self, items: list[object], where: Callable[[int], str]) -> list[Activity]:
        given: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            fields = activities.new_activity(item, where(i))
            priority = fields.get("priority", self._view)
            if not covers(self._view, priority):
                raise ValueError(
                    f"{where(i)}.priority {priority!r} is outside this instance's priority "
                    f"{self._view!r}: it may create activities there or under it"
                )
            given.append(fields)
            if i % 100 == 99:
                bridge.pause()
        _no_repeats(given, "id", where)
        _no_repeats(given, "source", where)
        for priority in {g.get("priority", self._view) for g in given}:
            if priority != self._view and not self._db.priority_exists(priority):
                raise ValueError(
                    f"there is no priority {priority!r}: the operator creates it with "
                    f"corral priorities create {priority}"
                )
        now = self._now()
        with self._plot.database.transaction(write=True):
            self._db.lock_tree(self._root)
            by_id = {str(r[0]): r for r in self._db.by_ids([g["id"] for g in given if "id" in g])}
            by_source = {
                str(r[5]): r
                for r in self._db.by_sources(
                    self._root, [g["source"] for g in given if g.get("source")]
                )
            }
            existing = {
                str(r[0]): a
                for r, a in zip(
                    [*by_id.values(), *by_source.values()],
                    self._plot._with_notes([*by_id.values(), *by_source.values()]),
                    strict=True,
                )
            }
            self._free_note_ids(given, where)
            changes: list[_Change] = []
            named: dict[str, int] = {}
            for i, fields in enumerate(given):
                row = by_id.get(fields.get("id", "")) or by_source.get(fields.get("source") or "")
                notes = fields.pop("notes")
                if row is not None and named.setdefault(str(row[0]), i) != i:
                    raise ValueError(
                        f"{where(i)} and {where(named[str(row[0])])} name the same activity "
                        f"({row[0]}), one by id and one by source: a batch names each once"
                    )
                if row is None:
                    changes.append(self._new(fields, notes, now, where(i)))
                elif not covers(self._view, str(row[2])):
                    raise ValueError(_taken(fields, row, where(i), self._root))
                else:
                    fields.pop("id", None)
                    fields.pop("source", None)
                    current = existing[str(row[0])]
                    changes.append(self._changed(current, fields, notes, now, where(i)))
                if i % 100 == 99:
                    bridge.pause()
            _fits(changes, "create_activities")
            self._plot._write(self._author, changes, now=now)
        return [c.activity for c in changes]

    def _new(
        self, fields: dict[str, Any], notes: list[dict[str, Any]], now: int, where: str
    ) -> _Change:
        kind: ActivityType = fields["type"]
        done = fields.get("done", False if kind is ActivityType.ACTION else None)
        check_done(kind, done, where)
        check_span(fields.get("start"), fields.get("end"), where)
        at = _time(now)
        aid = fields.get("id") or Uuid.generate()
        made = tuple(
            Note(note.get("id") or Uuid.generate(), note["content"], note["key"],
                 self._author.instance, at, at)
            for note in _unique_notes(notes, where)
        )  # fmt: skip
        activity = Activity(
            aid, kind, fields.get("title", ""), made, fields.get("source"), fields.get("start"),
            fields.get("end"), done, fields.get("meta"), fields.get("priority", self._view),
            self._author.instance, at, at,
        )  # fmt: skip
        return _Change(activity, _size(activity, where), True, notes_added=made)

    def _changed(
        self,
        current: Activity,
        fields: dict[str, Any],
        notes: list[dict[str, Any]],
        now: int,
        where: str,
    ) -> _Change:
        """``current`` with ``fields`` set and ``notes`` added (by key, or unless one has
        the same content), and what that changed."""
        if "priority" in fields:
            target = fields["priority"]
            if not covers(self._view, target):
                raise ValueError(
                    f"{where}.priority {target!r} is outside this instance's priority "
                    f"{self._view!r}"
                )
            if target != self._view and not self._db.priority_exists(target):
                raise ValueError(
                    f"there is no priority {target!r}: the operator creates it with "
                    f"corral priorities create {target}"
                )
        updated = replace(current, **fields)
        if updated.type is not current.type and "done" not in fields:
            # An ACTION's done is a bool; no other type has one.
            done = (current.done or False) if updated.type is ActivityType.ACTION else None
            updated = replace(updated, done=done)
        check_done(updated.type, updated.done, where)
        check_span(updated.start, updated.end, where)
        at = _time(now)
        kept = list(updated.notes)
        index = _NoteIndex(kept)
        added: list[Note] = []
        rewritten: list[Note] = []
        for given in _unique_notes(notes, where):
            position = index.find(given)
            if position is None:
                made = Note(given.get("id") or Uuid.generate(), given["content"], given["key"],
                            self._author.instance, at, at)  # fmt: skip
                index.add(made, len(kept))
                kept.append(made)
                added.append(made)
            elif kept[position].content != given["content"]:
                kept[position] = replace(kept[position], content=given["content"], updated_at=at)
                rewritten.append(kept[position])
        names = [f for f in activities.UPDATABLE if getattr(updated, f) != getattr(current, f)]
        if added or rewritten:
            names.append("notes")
        if not names:
            return _Change(current, _size(current, where), False)
        updated = replace(updated, notes=tuple(kept), updated_at=at)
        note = (added or rewritten)[-1] if (added or rewritten) else None
        return _Change(
            updated, _size(updated, where), False, current, tuple(names), note,
            tuple(added), tuple(rewritten),
        )  # fmt: skip

    def _free_note_ids(self, given: list[dict[str, Any]], where: Callable[[int], str]) -> None:
        """Refuse note ids an agent chose that another note has, or two notes share."""
        seen: dict[str, int] = {}
        for i, fields in enumerate(given):
            for note in fields["notes"]:
                if "id" in note:
                    if note["id"] in seen:
                        raise ValueError(
                            f"{where(i)}.notes: note id {note['id']} is also given in "
                            f"{where(seen[note['id']])}: each note needs its own id"
                        )
                    seen[note["id"]] = i
        taken = {str(row[0]): str(row[1]) for row in self._db.note_ids_taken(list(seen))}
        for i, fields in enumerate(given):
            for note in fields["notes"]:
                owner = taken.get(note.get("id", ""))
                if owner is not None and owner != fields.get("id"):
                    raise ValueError(
                        f"{where(i)}.notes: note id {note['id']} is already the id of a note "
                        "of another activity: choose a new one (Uuid.generate())"
                    )

    def _read(self, key: str) -> Activity | None:
        found = self._plot._with_notes(self._visible(self._db.by_ids([key])))
        return found[0] if found else None

    def _visible(self, rows: Sequence[Row]) -> list[Row]:
        return [row for row in rows if covers(self._view, str(row[2]))]


# -- rows and values --------------------------------------------------------------------


def _activity(row: Row, notes: Iterable[Note]) -> Activity:
    (aid, _root, priority, kind, title, source, starts, ends, done, meta, author, _bytes,
     created, updated) = row  # fmt: skip
    return Activity(
        str(aid), ActivityType(kind), str(title), tuple(notes), source,
        _decoded(starts), _decoded(ends), None if done is None else bool(done), _decoded(meta),
        str(priority), author, _time(created), _time(updated),
    )  # fmt: skip


def _note(row: Row) -> Note:
    nid, _activity_id, key, content, author, created, updated = row
    return Note(str(nid), str(content), key, author, _time(created), _time(updated))


def _row(change: _Change) -> dict[str, Any]:
    a = change.activity
    return {
        "id": a.id,
        "root": a.priority.split("/")[0],
        "priority": a.priority,
        "type": a.type.value,
        "title": a.title,
        "source": a.source,
        "starts": _encoded(a.start),
        "ends": _encoded(a.end),
        "done": a.done,
        "meta": _encoded(a.meta),
        "author": a.author,
        "size": change.size,
        "created_at": _ms(a.created_at),
        "updated_at": _ms(a.updated_at),
    }


def _note_row(note: Note, activity: str) -> dict[str, Any]:
    return {
        "id": note.id,
        "activity_id": activity,
        "key": note.key,
        "content": note.content,
        "author": note.author,
        "created_at": _ms(note.created_at),
        "updated_at": _ms(note.updated_at),
    }


def _size(activity: Activity, where: str) -> int:
    """What the activity holds, as ``MAX_ACTIVITY_BYTES`` counts it; ``ValueError`` past it
    (and for a ``meta`` the codec cannot store, naming where in it)."""
    try:
        meta = len(codec.encode(activity.meta, path=f"{where}.meta"))
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    size = (
        len(activity.title.encode())
        + len((activity.source or "").encode())
        + meta
        + sum(
            len(n.content.encode()) + len((n.key or "").encode()) + NOTE_OVERHEAD
            for n in activity.notes
        )
    )
    if size > MAX_ACTIVITY_BYTES:
        raise ValueError(
            f"{where}: the activity would hold {size:,} bytes (title, meta and notes), over "
            f"the {MAX_ACTIVITY_BYTES:,} an activity may: keep large content elsewhere and "
            "link to it"
        )
    return size


def _fits(changes: Sequence[_Change], call: str) -> None:
    answer = sum(c.size + _OVERHEAD for c in changes)
    if answer > MAX_ANSWER_BYTES:
        raise ValueError(
            f"{call}: the activities of this call hold about {answer:,} bytes, more than one "
            f"answer may carry ({MAX_ANSWER_BYTES:,}): nothing was created; send fewer at once"
        )


def _taken(fields: dict[str, Any], row: Row, where: str, root: str) -> str:
    """Why an activity this instance cannot see stops ``fields`` being created."""
    if fields.get("id") == row[0]:
        return (
            f"{where}.id {row[0]} is already the id of another activity: choose a new one "
            "(Uuid.generate())"
        )
    return (
        f"{where}.source {fields.get('source')!r:.80} is already the source of an activity "
        f"of priority tree {root!r} outside this instance's priority; a source names one "
        "activity in its tree"
    )


def _no_repeats(given: list[dict[str, Any]], field: str, where: Callable[[int], str]) -> None:
    seen: dict[str, int] = {}
    for i, fields in enumerate(given):
        value = fields.get(field)
        if value is None:
            continue
        if value in seen:
            raise ValueError(
                f"{where(i)}.{field} {value!r:.80} repeats {where(seen[value])}'s: a batch names "
                "each activity once"
            )
        seen[value] = i


class _NoteIndex:
    """Where each note of an activity is, by id, by key and by content: which note a
    given one is, found in constant time however many notes the activity and the call
    hold (a hostile batch must not cost their product)."""

    def __init__(self, notes: Iterable[Note]) -> None:
        self._by: dict[tuple[str, str], int] = {}
        for position, note in enumerate(notes):
            self.add(note, position)

    def add(self, note: Note, position: int) -> None:
        self._by.setdefault(("id", note.id), position)
        if note.key is not None:
            self._by.setdefault(("key", note.key), position)
        self._by.setdefault(("content", note.content), position)

    def find(self, given: dict[str, Any]) -> int | None:
        """The position of the note ``given`` is: the one with its id or key, or, for a
        note given with neither, one with the same content (so importing again adds
        nothing)."""
        found = self._by.get(("id", given.get("id") or ""))
        if found is not None:
            return found
        if given["key"] is not None:
            return self._by.get(("key", given["key"]))
        return self._by.get(("content", given["content"]))


def _unique_notes(notes: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    keys = [n["key"] for n in notes if n["key"] is not None]
    if len(keys) != len(set(keys)):
        raise ValueError(f"{where}.notes: two notes have the same key")
    return notes


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)


def _time(ms: int) -> dt.datetime:
    """Milliseconds since the epoch as a datetime, exactly (no float in between)."""
    return _EPOCH + ms * _MS


def _ms(when: dt.datetime | None) -> int:
    assert when is not None
    return (when - _EPOCH) // _MS


def _encoded(value: Any) -> bytes | None:
    return None if value is None else codec.encode(value)


def _decoded(value: bytes | None) -> Any:
    return None if value is None else codec.decode(bytes(value))
