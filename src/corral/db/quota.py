"""Counting an instance's tasks or callbacks against its quota before adding one
(``TaskDatabase.count_pending``, ``CallbackDatabase.count``).

The count and the insert after it are one write transaction, which first takes the
instance's turn (``Database.take_turn``): otherwise two executions of one instance
could both count 999 and both insert. The count, a statement of its own after it,
sees every insert committed by whoever held the turn before.
"""

from __future__ import annotations

from typing import Any

from corral.db.raw import Database

# Any fixed number shared by every Corral process, "corr": "an instance's quota turn".
_LOCK_CLASS = 0x636F7272


def count_before_insert(
    database: Database, cur: Any, table: str, where: str, params: dict[str, Any], limit: int
) -> int:
    """How many of ``table``'s rows match ``where`` (about ``params['instance']``):
    inside the caller's write transaction, before it inserts one more.

    The count reads at most ``limit`` rows; at the limit (the insert will be
    refused), it counts them all, for the message.
    """
    database.take_turn(cur, _LOCK_CLASS, params["instance"])
    bounded = f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {where} LIMIT :limit) AS n"
    counted = int(database.execute(cur, bounded, {**params, "limit": limit}).fetchone()[0])
    if counted < limit:
        return counted
    every = f"SELECT count(*) FROM {table} WHERE {where}"
    return int(database.execute(cur, every, params).fetchone()[0])
