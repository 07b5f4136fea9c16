"""Cursor pagination, the one way every list of the admin API pages.

A list is read newest first in SQL, ``limit + 1`` rows at a time: the extra row
says whether there is a next page, and the last row shown is its cursor. A cursor
is the sort key of that row (a time and an id, mostly), encoded: rows added
meanwhile never shift a page, since the next page starts strictly after the key.
Lists ordered otherwise (an instance's state by key, priorities by name) page the
same way on their own key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from corral.server.api.auth import ApiError

T = TypeVar("T")
R = TypeVar("R")

MAX_LIMIT = 100
#: The numbers a cursor holds fit a 64-bit column.
_BOUND = 2**63

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page, 1-100.")]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="The next_cursor of the previous page; none: the first."),
]


class Page(BaseModel, Generic[T]):
    """One page of a list, and where the next one starts (null: this was the last)."""

    data: list[T]
    next_cursor: str | None


def encode(key: Sequence[int | str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """The key a cursor holds, if it has the ``kinds`` of values this list's keys have;
    else ``ApiError`` 400 (a cursor of another list, or none this API made)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if (
        type(key) is not list
        or len(key) != len(kinds)
        or any(type(value) is not kind for value, kind in zip(key, kinds, strict=True))
        or any(type(value) is int and not -_BOUND <= value < _BOUND for value in key)
        or any(type(value) is str and not _storable(value) for value in key)
    ):
        raise ApiError(
            400, "bad_cursor", "cursor is not one this list gave: start again without one"
        )
    return key


def _storable(text: str) -> bool:
    """Whether a column can hold ``text`` (a cursor could be forged to hold anything)."""
    if len(text) > 1000 or "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode(cursor: str | None) -> tuple[int, str] | None:
    """The (time, id) a cursor holds; ``ApiError`` 400 if it is not one this API made."""
    if cursor is None:
        return None
    at, key = _decode(cursor, (int, str))
    return at, key


def decode_times(cursor: str | None) -> tuple[int, int] | None:
    """The (time, number) a cursor holds: for lists whose ids are numbers (log lines)."""
    if cursor is None:
        return None
    at, number = _decode(cursor, (int, int))
    return at, number


def decode_number(cursor: str | None) -> int | None:
    """The id a cursor holds, for lists ordered by a number alone (tasks)."""
    if cursor is None:
        return None
    (number,) = _decode(cursor, (int,))
    return int(number)


def decode_name(cursor: str | None) -> str | None:
    """The name or key a cursor holds, for lists ordered by one (state, priorities)."""
    if cursor is None:
        return None
    (name,) = _decode(cursor, (str,))
    return str(name)


def page(
    rows: Sequence[R],
    limit: int,
    key: Callable[[R], Sequence[int | str]],
    shown: Callable[[R], T],
    *,
    resume: Sequence[int | str] | None = None,
) -> Page[T]:
    """The page of ``rows`` (read ``limit + 1``), each ``shown``, with the next cursor.
    ``resume``: the key a list that stopped short of a page goes on after (a search
    that read its share of the history), when there is no next row to start after."""
    more = len(rows) > limit
    kept = rows[:limit]
    if more and kept:
        next_cursor: str | None = encode(key(kept[-1]))
    else:
        next_cursor = None if resume is None else encode(resume)
    return Page[T](data=[shown(row) for row in kept], next_cursor=next_cursor)
