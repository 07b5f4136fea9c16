"""Callbacks: persistent, unguessable tokens that name a method of an instance by name.

The method is looked up when the callback runs, against the instance's version
at that moment: after a deploy, an old callback runs the new code.
"""

from __future__ import annotations

import secrets

from corral.db.raw import Database


class UnknownCallback(LookupError):
    """The token names no callback of this instance (deleted, or never made)."""


class Callbacks:
    def __init__(self, database: Database) -> None:
        self.database = database

    def create(self, instance: str, method: str, args: bytes, *, now: int) -> str:
        token = "cb_" + secrets.token_urlsafe(18)
        self.database.write(
            "INSERT INTO callbacks (token, instance, method, args, created_at) "
            "VALUES (:token, :instance, :method, :args, :now)",
            {"token": token, "instance": instance, "method": method, "args": args, "now": now},
        )
        return token

    def resolve(self, instance: str, token: str) -> tuple[str, bytes]:
        """(method name, encoded extra arguments) of one of this instance's callbacks."""
        row = self.database.fetch_one(
            "SELECT method, args FROM callbacks WHERE token = :token AND instance = :instance",
            {"token": token, "instance": instance},
        )
        if row is None:
            raise UnknownCallback(
                f"there is no callback {token!r} for this instance: it was deleted, or it "
                "belongs to another instance"
            )
        return row[0], bytes(row[1])

    def delete(self, instance: str, token: str) -> None:
        self._delete("instance = :instance AND token = :token", instance=instance, token=token)

    def delete_all(self, instance: str) -> None:
        self._delete("instance = :instance", instance=instance)

    def _delete(self, where: str, **params: str) -> None:
        self.database.write(f"DELETE FROM callbacks WHERE {where}", params)
