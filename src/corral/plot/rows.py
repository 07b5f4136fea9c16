"""Activities and notes between their rows and their values, and what they weigh.

The size an activity holds is what ``MAX_ACTIVITY_BYTES`` bounds; what a call may
answer is bounded by the sandbox channel's frame (``MAX_ANSWER_BYTES``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from corral import codec
from corral.activities import (
    MAX_ACTIVITY_BYTES,
    NOTE_OVERHEAD,
    Activity,
    ActivityType,
    Note,
)
from corral.db.activities import Row

if TYPE_CHECKING:
    from corral.plot.service import Change


#: The most one plot call may answer, encoded: the sandbox channel's frames are
#: 4 MiB (``sandbox.protocol.MAX_FRAME``), and an answer must fit in one.
MAX_ANSWER_BYTES: Final = 3 * 1024 * 1024
#: What an activity costs in an answer beyond what ``size`` counts: its id, type,
#: priority (200 characters at most), author (an instance id: an agent name of at
#: most 100 characters and 9 more), times and framing, about 470 bytes at most. A
#: batch of ``MAX_BATCH`` small activities still fits.
_OVERHEAD: Final = 600


def activity_of(row: Row, notes: Iterable[Note]) -> Activity:
    (aid, _root, priority, kind, title, source, starts, ends, done, meta, author, _bytes,
     created, updated) = row  # fmt: skip
    return Activity(
        str(aid), ActivityType(kind), str(title), tuple(notes), source,
        decoded(starts), decoded(ends), None if done is None else bool(done), decoded(meta),
        str(priority), author, time_of(created), time_of(updated),
    )  # fmt: skip


def note_of(row: Row) -> Note:
    nid, _activity_id, key, content, author, created, updated = row
    return Note(str(nid), str(content), key, author, time_of(created), time_of(updated))


def activity_row(change: Change) -> dict[str, Any]:
    a = change.activity
    return {
        "id": a.id,
        "root": a.priority.split("/")[0],
        "priority": a.priority,
        "type": a.type.value,
        "title": a.title,
        "source": a.source,
        "starts": encoded(a.start),
        "ends": encoded(a.end),
        "done": a.done,
        "meta": encoded(a.meta),
        "author": a.author,
        "size": change.size,
        "created_at": ms_of(a.created_at),
        "updated_at": ms_of(a.updated_at),
    }


def note_row(note: Note, activity: str) -> dict[str, Any]:
    return {
        "id": note.id,
        "activity_id": activity,
        "key": note.key,
        "content": note.content,
        "author": note.author,
        "created_at": ms_of(note.created_at),
        "updated_at": ms_of(note.updated_at),
    }


def size_of(activity: Activity, where: str) -> int:
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
            len(n.content.encode())
            + len((n.key or "").encode())
            + len((n.author or "").encode())
            + NOTE_OVERHEAD
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


def check_answer(changes: Sequence[Change], call: str) -> None:
    answer = sum(c.size + _OVERHEAD for c in changes)
    if answer > MAX_ANSWER_BYTES:
        raise ValueError(
            f"{call}: the activities of this call hold about {answer:,} bytes, more than one "
            f"answer may carry ({MAX_ANSWER_BYTES:,}): nothing was created; send fewer at once"
        )


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)


def time_of(ms: int) -> dt.datetime:
    """Milliseconds since the epoch as a datetime, exactly (no float in between)."""
    return _EPOCH + ms * _MS


def ms_of(when: dt.datetime | None) -> int:
    assert when is not None
    return (when - _EPOCH) // _MS


def encoded(value: Any) -> bytes | None:
    return None if value is None else codec.encode(value)


def decoded(value: bytes | None) -> Any:
    return None if value is None else codec.decode(bytes(value))
