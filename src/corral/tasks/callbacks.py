"""Callbacks: persistent, unguessable tokens that name a method of an instance by name.

The method is looked up when the callback runs, against the instance's version
at that moment: after a deploy, an old callback runs the new code.
"""

from __future__ import annotations

import secrets

from corral.db.raw import Database
from corral.errors import UnknownCallback
from corral.quotas import Quotas, callbacks_exceeded
from corral.tasks.quota import count_before_insert

_MINE = "instance = :instance"
_INSERT = (
    "INSERT INTO callbacks (token, instance, method, args, created_at) "
    "VALUES (:token, :instance, :method, :args, :now)"
)


class Callbacks:
    def __init__(self, database: Database) -> None:
        self.database = database

    def create(
        self, instance: str, method: str, args: bytes, *, now: int, quotas: Quotas | None = None
    ) -> str:
        """A new callback's token; with ``quotas``, refused with ``QuotaExceeded`` when
        the instance already has ``quotas.callbacks`` of them."""
        token = "cb_" + secrets.token_urlsafe(18)
        params = {"token": token, "instance": instance, "method": method, "args": args, "now": now}
        if quotas is None:
            self.database.write(_INSERT, params)
            return token
        with self.database.transaction(write=True) as cur:
            mine, limit = {"instance": instance}, quotas.callbacks
            made = count_before_insert(self.database, cur, "callbacks", _MINE, mine, limit)
            if made >= quotas.callbacks:
                raise callbacks_exceeded(quotas, made)
            self.database.execute(cur, _INSERT, params)
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
        self._delete(_MINE, instance=instance)

    def _delete(self, where: str, **params: str) -> None:
        self.database.write(f"DELETE FROM callbacks WHERE {where}", params)
