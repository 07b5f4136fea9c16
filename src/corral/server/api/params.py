"""Query parameters the lists share: names, numbers that fit a column, and times.

Every number reaches SQL as a 64-bit integer, so each is bounded here: a larger
one would fail in the driver (a 5xx) instead of being refused (a 4xx).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Path, Query
from pydantic import AfterValidator

from corral.server.api.auth import ApiError

#: The largest number a 64-bit column holds.
MAX_INT: Final = 2**63 - 1


def storable(text: str) -> str:
    """``text``, if a database column can hold it: no NUL character (PostgreSQL's text
    has none), no lone surrogate (no UTF-8 has one); else ``ValueError``."""
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (it has a lone surrogate)") from None
    return text


#: Text of a request's body that is stored or looked up.
Text = Annotated[str, AfterValidator(storable)]
Name = Annotated[str | None, Query(min_length=1, max_length=200)]
TaskId = Annotated[int, Path(ge=1, le=MAX_INT, description="A task's id.")]
Moment = Annotated[
    str | None,
    Query(
        max_length=40,
        description="A time: milliseconds since the epoch, or ISO 8601 "
        "(2026-12-01T10:00:00Z; without a zone, UTC).",
    ),
]


def moment(value: str | None, name: str) -> int | None:
    """Milliseconds since the epoch of a ``Moment`` parameter; ``ApiError`` 400 naming
    ``name`` if it is neither form."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit() and len(text) <= 15:  # beyond year 33658: no time anything has
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400,
            "invalid_request",
            f"{name} is not a time: give milliseconds since the epoch or ISO 8601 "
            f"(2026-12-01T10:00:00Z), got {value!r:.60}",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return int(when.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise ApiError(400, "invalid_request", f"{name} is out of range: {value!r:.60}") from None
