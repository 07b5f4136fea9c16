"""Callbacks: persistent, unguessable tokens that name a method of an instance by name.

The method is looked up when the callback runs, against the instance's version
at that moment: after a deploy, an old callback runs the new code.
"""

from __future__ import annotations

import secrets

from corral.db.callbacks import CallbackDatabase
from corral.db.raw import Database
from corral.errors import UnknownCallback
from corral.quotas import Quotas, callbacks_exceeded


def new_token() -> str:
    """A fresh callback token: unguessable, since whoever holds it can run the callback."""
    return "cb_" + secrets.token_urlsafe(18)


class Callbacks:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._db = CallbackDatabase(database)

    def create(
        self, instance: str, method: str, args: bytes, *, now: int, quotas: Quotas | None = None
    ) -> str:
        """A new callback's token; with ``quotas``, refused with ``QuotaExceeded`` when
        the instance already has ``quotas.callbacks`` of them."""
        token = new_token()
        if quotas is None:
            self._db.insert(token, instance, method, args, now=now)
            return token
        with self.database.transaction(write=True):
            made = self._db.count(instance, quotas.callbacks)
            if made >= quotas.callbacks:
                raise callbacks_exceeded(quotas, made)
            self._db.insert(token, instance, method, args, now=now)
        return token

    def resolve(self, instance: str, token: str) -> tuple[str, bytes]:
        """(method name, encoded extra arguments) of one of this instance's callbacks."""
        found = self._db.resolve(instance, token)
        if found is None:
            raise UnknownCallback(
                f"there is no callback {token!r} for this instance: it was deleted, or it "
                "belongs to another instance"
            )
        return found

    def delete(self, instance: str, token: str) -> None:
        self._db.delete(instance, token)

    def delete_all(self, instance: str) -> None:
        self._db.delete_all(instance)
