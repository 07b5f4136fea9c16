"""An instance's store as an operator reads it: keys a page at a time, typed values, TTL.

Values are shown as tagged JSON (``corral.tagged_json``), as ``corral state`` shows
them: a tuple stays a tuple, bytes stay bytes. A page of keys shows each value up to
``INLINE_BYTES`` encoded; a larger one is left out of the page (``omitted``) and read
on its own (``entry``): a page of a hundred 1 MiB values would otherwise be 100 MiB.
The operator reads; only the instance's own code writes its store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from corral import codec
from corral.db.raw import Database
from corral.db.state import state_sql
from corral.state.prefix import prefix_upper_bound
from corral.state.store import check_key
from corral.tagged_json import JsonValue, to_tagged

#: The largest value (encoded) a page of keys shows.
INLINE_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Entry:
    """A key, its value (None and ``omitted`` when too large for a page), its size
    encoded, and when it expires (ms since the epoch) and how long that is from now."""

    key: str
    value: JsonValue
    omitted: bool
    size: int
    expires_at: int | None
    ttl_ms: int | None


class StateBrowser:
    """Read any instance's store (the scope is the instance's id)."""

    def __init__(self, database: Database) -> None:
        self._sql = state_sql(database)

    def entries(
        self, instance: str, *, prefix: str = "", after: str | None = None, now: int, limit: int
    ) -> list[Entry]:
        """Live keys starting with ``prefix`` and after ``after`` (the previous page's
        last key), ascending; ``ValueError`` for a prefix or key no store key could
        have."""
        if prefix:
            check_key(prefix)
        if after is not None:
            check_key(after)
        rows = self._sql.browse(
            instance, prefix, prefix_upper_bound(prefix), after=after, now=now, limit=limit
        )
        return [_entry(key, value, expires_at, now, inline=True) for key, value, expires_at in rows]

    def entry(self, instance: str, key: str, *, now: int) -> Entry | None:
        """One live key, its value whatever its size; None if it is missing (never set,
        deleted or expired)."""
        found = self._sql.entry(instance, check_key(key), now)
        if found is None:
            return None
        value, expires_at = found
        return _entry(key, value, expires_at, now, inline=False)


def _entry(key: str, data: bytes, expires_at: int | None, now: int, *, inline: bool) -> Entry:
    ttl = None if expires_at is None else max(0, expires_at - now)
    if inline and len(data) > INLINE_BYTES:
        return Entry(key, None, True, len(data), expires_at, ttl)
    return Entry(key, to_tagged(codec.decode(data)), False, len(data), expires_at, ttl)
