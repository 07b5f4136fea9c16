"""Cursor pagination, the one way every list of the admin API pages.

A list is read newest first in SQL, ``limit + 1`` rows at a time: the extra row
says whether there is a next page, and the last row shown is its cursor. A cursor
is the sort key of that row (a time and an id), encoded: rows added meanwhile
never shift a page, since the next page starts strictly after the key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from corral.server.api.auth import ApiError

T = TypeVar("T")
R = TypeVar("R")

MAX_LIMIT = 100

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


def decode(cursor: str | None) -> tuple[int, str] | None:
    """The (time, id) a cursor holds; ``ApiError`` 400 if it is not one this API made."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if type(key) is not list or len(key) != 2 or type(key[0]) is not int or type(key[1]) is not str:
        raise ApiError(400, "bad_cursor", "cursor is not one this API gave: start without one")
    return key[0], key[1]


def page(
    rows: Sequence[R], limit: int, key: Callable[[R], tuple[int, str]], shown: Callable[[R], T]
) -> Page[T]:
    """The page of ``rows`` (read ``limit + 1``), each ``shown``, with the next cursor."""
    more = len(rows) > limit
    kept = rows[:limit]
    return Page[T](
        data=[shown(row) for row in kept],
        next_cursor=encode(key(kept[-1])) if more and kept else None,
    )
