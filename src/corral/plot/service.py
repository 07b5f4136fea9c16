"""Priorities, activities and notes in the database (SPEC §1.4), and the events their
changes cause.

:class:`Plot` (``services.plot``) is what operators read (``corral activities``,
``corral priorities``) and what writes every change; :meth:`Plot.bound` gives one
execution its ``self.tools.plot`` (:mod:`corral.plot.tools`).

Every change (a new activity, an update that changes something, a note added or
changed) queues ``on_activity(activity, changes)`` for every *other* instance whose
priority covers the activity's (or covered it, before a move), in the same
transaction as the change: a crash loses both or neither. An event's task carries,
after the two arguments, its origin (:class:`Cause`): how many events away it is
from a change no event caused, and which instance's change it announces. An
execution running an event at hop 8 changes what it likes, but its changes announce
nothing, and the instance's log says which two agents were answering each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from corral import codec
from corral.activities import (
    MAX_HOPS,
    Activity,
    Note,
    activity_id,
    lineage,
    priority_name,
)
from corral.db import bridge
from corral.db.activities import ActivityDatabase, Row
from corral.db.raw import Database
from corral.errors import QuotaExceeded, UnknownActivity, UnknownPriority
from corral.plot.rows import activity_of, activity_row, ms_of, note_of, note_row
from corral.quotas import Quotas

if TYPE_CHECKING:
    from corral.plot.tools import InstancePlot
from corral.tasks.queue import TaskQueue

log = logging.getLogger("corral.plot")

#: The method an activity event calls.
EVENT_METHOD: Final = "on_activity"

#: Resolves (agent, version number) to the methods that version defines.
MethodsOf = Callable[[str, int], frozenset[str]]


class LogLine(Protocol):
    """Writes a line to an instance's log (``History.log``)."""

    def __call__(self, instance: str, level: str, line: str, *, now: int) -> None: ...


@dataclass(frozen=True)
class Cause:
    """What an execution was running, as the events its changes cause need to know:
    the hop count of the activity event it ran (0: it ran no event), and the instance
    whose change that event announced."""

    hops: int = 0
    by: str | None = None
    #: The agent of ``by``, for the loop's log line (the instance may be gone by then).
    by_agent: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"hops": self.hops, "by": self.by, "by_agent": self.by_agent}

    @classmethod
    def of_event(cls, args: list[Any]) -> tuple[list[Any], Cause]:
        """An event task's arguments for ``on_activity``, and its origin (the last one)."""
        *call, origin = args
        return call, cls(int(origin["hops"]), origin["by"], origin.get("by_agent"))


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
class Author:
    """Who makes a change: the instance of an execution, and what that execution ran."""

    instance: str
    agent: str
    priority: str
    cause: Cause


@dataclass
class Change:
    """One activity as a call leaves it, and the event it causes (``changes``), if any."""

    activity: Activity
    size: int
    new: bool
    previous: Activity | None = None
    fields: tuple[str, ...] = ()
    note: Note | None = None
    notes_added: tuple[Note, ...] = ()
    notes_changed: tuple[Note, ...] = ()

    def priorities(self) -> set[str]:
        """Where the change is heard: the activity's priority, and the one it left (the
        instances that saw it there learn it has gone)."""
        moved_from = self.previous.priority if self.previous is not None else None
        return {self.activity.priority} | ({moved_from} if moved_from else set())

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
        log_line: LogLine,
        *,
        methods_of: MethodsOf,
        quotas: Quotas,
    ) -> None:
        self.database = database
        self.queue = queue
        self._log_line = log_line
        self.quotas = quotas
        self.db = ActivityDatabase(database)
        self._methods_of = methods_of

    # -- what operators see -------------------------------------------------------------

    def add_priority(self, name: str, *, now: int) -> str:
        """The priority ``name`` and those above it, made if missing (an install, or
        ``corral priorities create``); ``ValueError`` for a malformed name."""
        name = priority_name(name)
        self.db.add_priorities(lineage(name), now=now)
        return name

    def priorities(self, *, after: str | None = None, limit: int | None = None) -> list[Priority]:
        """Priorities by name; ``after``: from the name after it; ``limit``: so many."""
        return [
            Priority(str(r[0]), int(r[1]), int(r[2]), int(r[3]))
            for r in self.db.priorities(after=after, limit=limit)
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
            if not self.db.priority_exists(priority):
                raise UnknownPriority(f"there is no priority {priority!r} (see corral priorities)")
        after = (
            before
            if before is None or isinstance(before, tuple)
            else (ms_of(before.updated_at), before.id)
        )
        rows = self.db.find(
            priority, type_=None, done=None, source_prefix=None, since=None, limit=limit,
            before=after,
        )  # fmt: skip
        return self.with_notes(rows)

    def activity(self, activity: str) -> Activity:
        """One activity with its notes; :class:`UnknownActivity` if there is none."""
        try:
            key = activity_id(activity, "an activity id")
        except ValueError as exc:
            raise UnknownActivity(f"{exc} (see corral activities)") from None
        found = self.with_notes(self.db.by_ids([key]))
        if not found:
            raise UnknownActivity(f"there is no activity {activity!r} (see corral activities)")
        return found[0]

    # -- what an execution's tools do ---------------------------------------------------

    def bound(
        self, instance: str, agent: str, priority: str, cause: Cause, clock: Callable[[], float]
    ) -> InstancePlot:
        """``self.tools.plot`` for one execution of ``instance``."""
        from corral.plot.tools import InstancePlot  # which calls this module's Plot

        return InstancePlot(self, Author(instance, agent, priority, cause), clock)

    def with_notes(self, rows: Sequence[Row]) -> list[Activity]:
        notes: dict[str, list[Note]] = {}
        for row in self.db.notes_of([str(r[0]) for r in rows]):
            notes.setdefault(row[1], []).append(note_of(row))
        return [activity_of(row, notes.get(row[0], ())) for row in rows]

    def write(self, author: Author, changes: list[Change], *, now: int) -> None:
        """Write what a call changed and queue its events, inside the caller's open
        transaction."""
        new = [c for c in changes if c.new]
        if new:
            held = self.db.count_authored(author.instance, self.quotas.activities)
            if held + len(new) > self.quotas.activities:
                raise QuotaExceeded(
                    f"this instance would have created {held + len(new):,} activities, over "
                    f"its quota of {self.quotas.activities:,}: update activities (create by "
                    "source) rather than creating new ones, or ask the operator to raise "
                    "[quotas] activities"
                )
        self.db.insert([activity_row(c) for c in new])
        self.db.update([activity_row(c) for c in changes if not c.new and c.fields])
        self.db.insert_notes([note_row(n, c.activity.id) for c in changes for n in c.notes_added])
        for c in changes:
            for note in c.notes_changed:
                self.db.update_note(note.id, note.content, now=now)
        self._announce(author, [c for c in changes if c.changed], now=now)

    def _announce(self, author: Author, changes: list[Change], *, now: int) -> None:
        """Queue ``on_activity`` for every other instance that sees each change."""
        if not changes:
            return
        listeners: dict[str, list[str]] = {}
        for priority in {p for c in changes for p in c.priorities()}:
            listeners[priority] = [
                instance
                for instance, agent, version in self.db.listeners(
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
        origin = Cause(hops, author.instance, author.agent).wire()
        events: list[tuple[str, bytes]] = []
        for n, change in enumerate(changes):
            heard = sorted({i for p in change.priorities() for i in listeners[p]})
            if heard:
                args = codec.encode([change.activity, change.event_changes(), origin])
                events.extend((instance, args) for instance in heard)
            if n % 100 == 99:
                bridge.pause()
        self.queue.enqueue_events(EVENT_METHOD, events, now=now)

    def _dropped(self, author: Author, changes: list[Change], *, now: int) -> None:
        by = author.cause
        other = f"{by.by_agent} ({by.by})" if by.by_agent else (by.by or "an operator")
        line = (
            f"activity event loop: {author.agent} ({author.instance}) changed "
            f"{len(changes)} activit{'y' if len(changes) == 1 else 'ies'} (first "
            f"{changes[0].activity.id}) while handling an event {MAX_HOPS} hops from its "
            f"start, last caused by {other}; the events of these changes were dropped, so "
            f"{author.agent} and {by.by_agent or other} stop answering each other here"
        )
        log.warning("%s: %s", author.instance, line)
        self._log_line(author.instance, "warning", line, now=now)
