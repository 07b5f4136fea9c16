"""``self.tools.plot``: activities and notes in the instance's priority (SPEC §1.4).

Each method is one request, whatever it holds: ``create_activities`` with a
thousand activities is one call, written atomically. The host checks every
argument (it trusts nothing from the sandbox) and raises ``ValueError`` naming the
field at fault, at the agent's own ``await``.

This module runs inside the sandbox: it imports no host code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from corral.activities import Activity, ActivityType, Note
from corral.sdk.channel import ToolChannel
from corral.sdk.operations import Op


class PlotTools:
    """The instance's activities: created, updated, read, found, and noted."""

    def __init__(self, channel: ToolChannel) -> None:
        self._channel = channel

    async def create_activity(self, activity: dict[str, Any]) -> Activity:
        """Create an activity in this instance's priority (or, with ``priority``, one
        under it); returns it as stored.

        Fields: ``type`` (required: ``ActivityType.ACTION``, ``EVENT`` or ``NOTE``),
        ``title``, ``notes`` (``[{"content", "key"?, "id"?}]``), ``source``, ``start``,
        ``end``, ``done`` (an ACTION's), ``meta`` (a storable dict), ``priority``, ``id``
        (``Uuid.generate()``; made for you if omitted). Creating with a ``source`` (or an
        ``id``) that an activity of the priority tree already has **updates** that
        activity instead: only the fields given change, a note given with the ``id`` or
        ``key`` of one of its notes changes that note, any other is added unless a note
        has the same content, and nothing changes if nothing differs. A source is
        unique in the whole tree (``work`` and all under it): one that an activity
        outside this instance's priority has is refused.
        """
        return await self._channel.call(Op.PLOT_CREATE, _wire(activity))  # type: ignore[no-any-return]

    async def create_activities(self, activities: list[dict[str, Any]]) -> list[Activity]:
        """Create (or update by source) many activities in **one** request, atomically:
        one bad item and nothing is written, and the error names its index and field
        (``activities[3].title``). Each new or changed activity is one event for the
        other agents of its priority."""
        batch = [_wire(a) for a in activities] if isinstance(activities, list) else activities
        return await self._channel.call(Op.PLOT_CREATE_MANY, batch)  # type: ignore[no-any-return]

    async def update_activity(self, activity_id: str, **changes: Any) -> Activity:
        """Change only the given fields (``title``, ``type``, ``start``, ``end``, ``done``,
        ``meta``, ``priority``); returns the activity as it now is. ``LookupError`` if
        this instance's priority has no activity ``activity_id``."""
        return await self._channel.call(Op.PLOT_UPDATE, activity_id, _wire(changes))  # type: ignore[no-any-return]

    async def get_activity(self, activity_id: str) -> Activity | None:
        """The activity with its notes, or None if this instance's priority has none."""
        return await self._channel.call(Op.PLOT_GET, activity_id)  # type: ignore[no-any-return]

    async def get_activity_by_source(self, source: str) -> Activity | None:
        """The activity of the priority tree with this external id, or None."""
        return await self._channel.call(Op.PLOT_GET_BY_SOURCE, source)  # type: ignore[no-any-return]

    async def find_activities(
        self,
        type: ActivityType | None = None,
        done: bool | None = None,
        source_prefix: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Activity]:
        """Activities of this instance's priority and those under it, most recently
        changed first: of one ``type``, ``done`` or not, whose source starts with
        ``source_prefix``, changed at or after ``since``; at most ``limit`` (1-100)."""
        return await self._channel.call(  # type: ignore[no-any-return]
            Op.PLOT_FIND, _wire({"type": type})["type"], done, source_prefix, since, limit
        )

    async def add_note(self, activity_id: str, content: str, key: str | None = None) -> Note:
        """Add a note (markdown) to the activity; with a ``key`` the activity's note of
        that key already has, that note's content is replaced instead. The other agents
        of the priority get an event (``changes["note"]``) when it changes anything."""
        return await self._channel.call(Op.PLOT_ADD_NOTE, activity_id, content, key)  # type: ignore[no-any-return]


def _wire(fields: Any) -> Any:
    """``fields`` as the channel carries them: an ``ActivityType`` as its value (the codec
    stores no enum), and a ``Note`` among the notes as the dict of its fields. Anything
    else goes as it is, for the host to check and refuse."""
    if not isinstance(fields, dict):
        return fields
    wired = dict(fields)
    if isinstance(wired.get("type"), ActivityType):
        wired["type"] = wired["type"].value
    notes = wired.get("notes")
    if isinstance(notes, list | tuple):  # an activity's own notes are a tuple
        wired["notes"] = [
            {"id": n.id, "key": n.key, "content": n.content} if type(n) is Note else n
            for n in notes
        ]
    return wired


__all__ = ["PlotTools"]
