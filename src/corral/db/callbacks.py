"""The callbacks' statements: tokens that name a method of an instance.

Both backends run the same SQL here.
"""

from __future__ import annotations

from corral.db.quota import count_before_insert
from corral.db.raw import Database

_MINE = "instance = :instance"


class CallbackDatabase:
    """Named operations on the callbacks table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def count(self, instance: str, limit: int) -> int:
        """The instance's callbacks, inside the caller's write transaction before it adds
        one (``count_before_insert``)."""
        with self.database.transaction(write=True) as cur:
            return count_before_insert(
                self.database, cur, "callbacks", _MINE, {"instance": instance}, limit
            )

    def insert(self, token: str, instance: str, method: str, args: bytes, *, now: int) -> None:
        # Through a cursor: inside the quota's transaction, no wait for a row count.
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur,
                "INSERT INTO callbacks (token, instance, method, args, created_at) "
                "VALUES (:token, :instance, :method, :args, :now)",
                {"token": token, "instance": instance, "method": method, "args": args, "now": now},
            )

    def resolve(self, instance: str, token: str) -> tuple[str, bytes] | None:
        """(method, encoded extra arguments) of the instance's callback, or None."""
        row = self.database.fetch_one(
            f"SELECT method, args FROM callbacks WHERE token = :token AND {_MINE}",
            {"token": token, "instance": instance},
        )
        return None if row is None else (row[0], bytes(row[1]))

    def delete(self, instance: str, token: str) -> None:
        self.database.write(
            f"DELETE FROM callbacks WHERE {_MINE} AND token = :token",
            {"instance": instance, "token": token},
        )

    def delete_all(self, instance: str) -> None:
        self.database.write(f"DELETE FROM callbacks WHERE {_MINE}", {"instance": instance})
