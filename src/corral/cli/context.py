"""What every ``corral`` command is given: the database URL and the parts built on it."""

from __future__ import annotations

import time

import sqlalchemy as sa

from corral.db import DEFAULT_URL, create_engine, resolve_url
from corral.db.engine import refuse_missing_folder
from corral.db.raw import Database, open_database
from corral.quotas import Quotas
from corral.runtime.registry import Instance, Registry
from corral.state import Store, open_store
from corral.tasks.queue import TaskQueue


class Context:
    """The database URL (``--db``, else ``CORRAL_DATABASE_URL``, else the default);
    each command opens only what it uses."""

    def __init__(self, db: str | None) -> None:
        self.url = resolve_url(db)
        self._checked = False

    @property
    def shown_url(self) -> str:
        """The URL as messages print it: its password, if any, as ``***``."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def usable_url(self) -> str:
        """The URL, once it is known not to name a SQLite file in a missing folder (a
        URL someone typed; the default's folder is made)."""
        if not self._checked and self.url != DEFAULT_URL:
            refuse_missing_folder(self.url)
        self._checked = True
        return self.url

    def engine(self) -> sa.Engine:
        return create_engine(self.usable_url())

    def database(self) -> Database:
        return open_database(self.usable_url())

    def registry(self) -> Registry:
        database = self.database()
        return Registry(database, TaskQueue(database))

    def queue(self) -> TaskQueue:
        return TaskQueue(self.database())

    def instance(self, instance_id: str) -> Instance:
        """The instance, uninstalled ones included (their history stays); an id that
        names none raises ``UnknownInstance``, so no command answers a mistyped id
        with an empty listing."""
        return self.registry().instance(instance_id)

    def store(self, scope: str, quotas: Quotas | None = None) -> Store:
        return open_store(self.usable_url(), scope, quotas=quotas)


def now_ms() -> int:
    return int(time.time() * 1000)
