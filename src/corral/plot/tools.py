"""``self.tools.plot`` on the host (SPEC §1.4): what an agent may ask, checked.

The sandbox is not trusted: every argument is checked again here (the SDK's
``corral.sdk.plot`` only carries them), every read and write is held to the
instance's view (its priority and those under it), and a batch is one transaction
under its priority tree's turn, written whole or not at all (``Plot.write``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

from corral import activities
from corral.activities import (
    MAX_BATCH,
    Activity,
    ActivityType,
    Note,
    Uuid,
    activity_id,
    activity_type,
    check_done,
    check_span,
    covers,
    no_nul,
)
from corral.db import bridge
from corral.db.activities import Row
from corral.plot.rows import check_answer, ms_of, size_of, time_of
from corral.plot.service import Author, Change, Plot

#: ``find_activities``' largest page: a hundred activities fit in one answer.
MAX_FIND: Final = 100


class InstancePlot:
    """``self.tools.plot`` on the host, for one execution: every argument checked (the
    sandbox is not trusted), every read and write held to the instance's view (its
    priority and those under it)."""

    def __init__(self, plot: Plot, author: Author, clock: Callable[[], float]) -> None:
        self._plot = plot
        self._db = plot.db
        self._author = author
        self._clock = clock
        self._view = author.priority
        self._root = author.priority.split("/")[0]

    def _now(self) -> int:
        return math.floor(self._clock() * 1000)

    # -- reads --------------------------------------------------------------------------

    def get_activity(self, activity: object) -> Activity | None:
        key = activity_id(activity, "get_activity: id")
        found = self._plot.with_notes(self._visible(self._db.by_ids([key])))
        return found[0] if found else None

    def get_activity_by_source(self, source: object) -> Activity | None:
        if type(source) is not str or not source:
            raise ValueError(
                f"get_activity_by_source: source must be a non-empty str, got {source!r:.60}"
            )
        no_nul(source, "get_activity_by_source: source")
        found = self._plot.with_notes(self._visible(self._db.by_sources(self._root, [source])))
        return found[0] if found else None

    def find_activities(
        self, type_: object, done: object, source_prefix: object, since: object, limit: object
    ) -> list[Activity]:
        kind = None if type_ is None else activity_type(type_, "find_activities: type")
        if done is not None and type(done) is not bool:
            raise ValueError(f"find_activities: done must be True, False or None, got {done!r:.60}")
        if source_prefix is not None and (type(source_prefix) is not str or not source_prefix):
            raise ValueError("find_activities: source_prefix must be a non-empty str or None")
        if source_prefix is not None:
            no_nul(source_prefix, "find_activities: source_prefix")
        if since is not None and not (type(since) is dt.datetime and since.tzinfo is not None):
            raise ValueError("find_activities: since must be a timezone-aware datetime or None")
        if type(limit) is not int or not 1 <= limit <= MAX_FIND:
            raise ValueError(f"find_activities: limit must be a whole number from 1 to {MAX_FIND}")
        rows = self._db.find(
            self._view,
            type_=None if kind is None else kind.value,
            done=done,
            source_prefix=source_prefix,
            since=None if since is None else ms_of(since),
            limit=limit,
        )
        return self._plot.with_notes(rows)

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
            self._plot.write(self._author, [change], now=now)
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
            self._plot.write(self._author, [change], now=now)
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
            self._existing(priority)
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
                    self._plot.with_notes([*by_id.values(), *by_source.values()]),
                    strict=True,
                )
            }
            named_by = [_target(g, by_id, by_source, where(i)) for i, g in enumerate(given)]
            self._free_note_ids(given, named_by, where)
            changes: list[Change] = []
            named: dict[str, int] = {}
            for i, fields in enumerate(given):
                row = named_by[i]
                notes = fields.pop("notes")
                if row is not None and named.setdefault(str(row[0]), i) != i:
                    raise ValueError(
                        f"{where(i)} and {where(named[str(row[0])])} name the same activity "
                        f"({row[0]}), one by id and one by source: a batch names each once"
                    )
                if row is None:
                    changes.append(self._new(fields, notes, now, where(i)))
                elif not covers(self._view, str(row[2])):
                    raise ValueError(_taken(fields, row, where(i), self._view))
                else:
                    fields.pop("id", None)
                    current = existing[str(row[0])]
                    if fields.get("source") == current.source:
                        fields.pop("source", None)
                    changes.append(self._changed(current, fields, notes, now, where(i)))
                if i % 100 == 99:
                    bridge.pause()
            check_answer(changes, "create_activities")
            self._plot.write(self._author, changes, now=now)
        return [c.activity for c in changes]

    def _new(
        self, fields: dict[str, Any], notes: list[dict[str, Any]], now: int, where: str
    ) -> Change:
        kind: ActivityType = fields["type"]
        done = fields.get("done")
        if kind is ActivityType.ACTION and done is None:
            done = False  # an ACTION is done or not: find_activities(done=False) finds it
        check_done(kind, done, where)
        check_span(fields.get("start"), fields.get("end"), where)
        at = time_of(now)
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
        return Change(activity, size_of(activity, where), True, notes_added=made)

    def _changed(
        self,
        current: Activity,
        fields: dict[str, Any],
        notes: list[dict[str, Any]],
        now: int,
        where: str,
    ) -> Change:
        """``current`` with ``fields`` set and ``notes`` added (by key, or unless one has
        the same content), and what that changed."""
        if "priority" in fields:
            target = fields["priority"]
            if not covers(self._view, target):
                raise ValueError(
                    f"{where}.priority {target!r} is outside this instance's priority "
                    f"{self._view!r}"
                )
            self._existing(target)
        updated = replace(current, **fields)
        if updated.type is not current.type and "done" not in fields:
            # An ACTION's done is a bool; no other type has one.
            done = (current.done or False) if updated.type is ActivityType.ACTION else None
            updated = replace(updated, done=done)
        check_done(updated.type, updated.done, where)
        check_span(updated.start, updated.end, where)
        at = time_of(now)
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
        names = [
            f
            for f in ("source", *activities.UPDATABLE)
            if getattr(updated, f) != getattr(current, f)
        ]
        if added or rewritten:
            names.append("notes")
        if not names:
            return Change(current, size_of(current, where), False)
        updated = replace(updated, notes=tuple(kept), updated_at=at)
        note = (added or rewritten)[-1] if (added or rewritten) else None
        return Change(
            updated, size_of(updated, where), False, current, tuple(names), note,
            tuple(added), tuple(rewritten),
        )  # fmt: skip

    def _free_note_ids(
        self,
        given: list[dict[str, Any]],
        named_by: list[Row | None],
        where: Callable[[int], str],
    ) -> None:
        """Refuse note ids an agent chose that two notes share, or that a note of an
        activity other than the one the item names (``named_by``) has."""
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
            row = named_by[i]
            for note in fields["notes"]:
                owner = taken.get(note.get("id", ""))
                if owner is not None and (row is None or owner != str(row[0])):
                    raise ValueError(
                        f"{where(i)}.notes: note id {note['id']} is already the id of a note "
                        "of another activity: choose a new one (Uuid.generate())"
                    )

    def _existing(self, priority: str) -> None:
        """Refuse a priority under the instance's that nobody has made: only an install or
        the operator makes priorities."""
        if priority != self._view and not self._db.priority_exists(priority):
            raise ValueError(
                f"there is no priority {priority!r}: the operator creates it with "
                f"corral priorities create {priority}"
            )

    def _read(self, key: str) -> Activity | None:
        found = self._plot.with_notes(self._visible(self._db.by_ids([key])))
        return found[0] if found else None

    def _visible(self, rows: Sequence[Row]) -> list[Row]:
        return [row for row in rows if covers(self._view, str(row[2]))]


def _target(
    fields: dict[str, Any], by_id: dict[str, Row], by_source: dict[str, Row], where: str
) -> Row | None:
    """The existing activity ``fields`` name, by id or by source, if any. Both naming two
    different activities, or an id naming one whose source differs, is refused: which
    the agent meant cannot be known, and a source never changes once set."""
    with_id = by_id.get(fields.get("id", ""))
    with_source = by_source.get(fields.get("source") or "")
    if with_id is not None and with_source is not None and with_id[0] != with_source[0]:
        raise ValueError(
            f"{where}: id {with_id[0]} and source {fields['source']!r:.80} name two different "
            "activities: give one of them"
        )
    if with_id is not None and fields.get("source") and with_id[5] not in (None, fields["source"]):
        raise ValueError(
            f"{where}.source: activity {with_id[0]} has the source {with_id[5]!r:.80}, and a "
            "source never changes"
        )
    return with_id if with_id is not None else with_source


def _taken(fields: dict[str, Any], row: Row, where: str, view: str) -> str:
    """Why an activity this instance cannot see stops ``fields`` being created."""
    if fields.get("id") == row[0]:
        return (
            f"{where}.id {row[0]} is already the id of another activity: choose a new one "
            "(Uuid.generate())"
        )
    return (
        f"{where}.source {fields.get('source')!r:.80} is already the source of an activity "
        f"outside this instance's priority {view!r}: a source is unique in the priority "
        f"tree {view.split('/')[0]!r}"
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
